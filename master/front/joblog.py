"""``log J12``: the logs of every process of a job, one after the other in rank order, each
line prefixed with its process's ``NODE:PID`` (``n2:4242: ...``), so the output of the
whole job can be read, grepped or sorted by node."""

from __future__ import annotations

from collections.abc import Callable

from common.errors import CorralError
from master.front.control import NoMaster
from master.front.ops import Backend
from master.front.results import JobMember, LogChunk
from master.logview import LogTail, LogView


class LinePrefixer:
    """Prefixes each line of a stream that arrives in chunks cut anywhere."""

    def __init__(self, prefix: bytes) -> None:
        self.prefix = prefix
        self._at_line_start = True

    def feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        pieces = data.split(b"\n")
        for index, piece in enumerate(pieces):
            last = index == len(pieces) - 1
            if last and not piece:
                break  # the chunk ended with its line: the next chunk starts a new one
            if self._at_line_start:
                out.append(self.prefix)
            out.append(piece)
            if not last:
                out.append(b"\n")
            self._at_line_start = not last
        return b"".join(out)

    def close(self) -> bytes:
        """A last line without its newline gets one, so the next process starts afresh."""
        return b"" if self._at_line_start else b"\n"


def job_log(backend: Backend, job: str, lines: int,
            show: Callable[[LogChunk], None]) -> tuple[LogView, list[str]]:
    """Show the last ``lines`` lines (0: all) of each process's log; return what was shown
    and an error line for each process whose log could not be shown."""
    members: list[JobMember] = backend.call("job_members", {"job": job})
    shown = LogTail()
    errors: list[str] = []
    all_ended = True
    for member in members:
        if member.unreachable is not None:
            errors.append(f"{member.ref}: error: {member.unreachable}")
            all_ended = all_ended and member.info is not None
            continue
        prefixer = LinePrefixer(f"{member.ref}: ".encode())

        def each(chunk: LogChunk, prefixer: LinePrefixer = prefixer) -> None:
            data = prefixer.feed(chunk.data)
            shown.add(data)
            show(LogChunk(data, chunk.offset, chunk.ended, chunk.more))

        try:
            ended = backend.call("log", {"ref": member.ref, "lines": lines,
                                         "follow": False}, each)
        except NoMaster:
            raise
        except CorralError as exc:
            errors.append(f"{member.ref}: error: {exc.message}")
            ended = False
        tail = prefixer.close()
        if tail:
            shown.add(tail)
            show(LogChunk(tail, 0, ended, False))
        all_ended = all_ended and bool(ended)
    return shown.view(job, all_ended), errors
