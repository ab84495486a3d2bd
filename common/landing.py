"""A file being received, on either side: written to a hidden temporary file beside its
destination, and only once it is whole (every frame that carried it authenticated, its size
as announced), fsync'd,
given its mode and renamed into place. A reader never sees half a file; a failed or
interrupted transfer leaves nothing at the destination."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO

from common.errors import CorralError, ErrorCode
from common.statefile import load_state_file

log = logging.getLogger("corral.landing")

TEMP_PREFIX = ".corral-partial-"
LEDGER_MAX_FILE = 16 * 1024 * 1024  # the ledger is emptied whenever no transfer is open
PERMISSION_BITS = 0o777


class PartialLedger:
    """Where the temporary files of transfers in progress are noted, so that a process
    killed in the middle of one (SIGKILL, power cut of the process) removes them the next
    time it starts. One line per temporary file, appended; emptied whenever no transfer is
    open, so it stays a few lines long."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._open = 0
        self._file: IO[str] | None = None  # kept open while transfers are: one write a file

    def sweep(self) -> list[Path]:
        """Remove what an earlier run left behind; return what was removed."""
        lines = load_state_file(self.path, LEDGER_MAX_FILE, _ledger_lines, log,
                                "no temporary files are looked for") or []
        removed = []
        for line in lines:
            try:
                temp = Path(json.loads(line))
            except (ValueError, TypeError):
                continue  # a line cut short by the crash itself
            if temp.name.startswith(TEMP_PREFIX):
                if temp.is_dir() and not temp.is_symlink():  # a staging folder
                    shutil.rmtree(temp, ignore_errors=True)
                    removed.append(temp)
                    continue
                with contextlib.suppress(FileNotFoundError):
                    temp.unlink()
                    removed.append(temp)
        self.path.unlink(missing_ok=True)
        return removed

    def opened(self, temp: Path) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", buffering=1)  # noqa: SIM115 (closed below)
        # Line-buffered: each line is in the file (the kernel's) before the temporary file
        # exists, so a process killed after this leaves a line for the next start.
        self._file.write(json.dumps(str(temp)) + "\n")
        self._open += 1

    def closed(self) -> None:
        self._open -= 1
        if self._open == 0:
            if self._file is not None:
                self._file.close()
                self._file = None
            self.path.unlink(missing_ok=True)


def _ledger_lines(raw: bytes) -> list[str]:
    return raw.decode(errors="replace").splitlines()


def io_error(path: Path | None, exc: OSError) -> CorralError:
    return CorralError(f"{path}: {exc.strerror or exc}", ErrorCode.IO)


class _Noted:
    """Something received under a temporary name that the ledger notes until it is
    renamed into place or removed."""

    final: Path
    temp: Path  # ``final`` itself when written in place, inside a staging folder
    _ledger: PartialLedger | None = None

    def land(self) -> None:
        """Rename into place; call only once complete and after a sync of its file
        system."""
        try:
            if self.temp != self.final:
                os.replace(self.temp, self.final)
        except OSError as exc:
            self.discard()
            raise io_error(self.final, exc) from None
        self._release()

    def discard(self) -> None:
        raise NotImplementedError

    def _release(self) -> None:
        ledger, self._ledger = self._ledger, None
        if ledger is not None:
            ledger.closed()


class IncomingFile(_Noted):
    def __init__(self, final: Path, mode: int, expected_size: int | None = None,
                 flush: Callable[[int], None] = os.fsync,
                 ledger: PartialLedger | None = None, in_place: bool = False) -> None:
        """``flush`` is how to fsync; an event loop passes one that runs in a thread.
        ``ledger`` notes the temporary file until it is renamed or removed. ``in_place``
        writes ``final`` itself, for a file inside a staging folder (``IncomingFolder``)
        that is renamed as a whole."""
        self.final = final
        # Permission bits only: a peer must never plant a setuid, setgid or sticky file.
        self.mode = mode & PERMISSION_BITS
        self.expected_size = expected_size
        self.size = 0
        self._flush = flush
        self.temp = final if in_place else temp_name(final)
        self._ledger: PartialLedger | None = None
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            if ledger is not None:  # noted first: a temporary file never exists unnoted
                ledger.opened(self.temp)
                self._ledger = ledger
            self._out = open(self.temp, "xb")  # noqa: SIM115 (closed in commit or discard)
        except OSError as exc:
            self._release()
            raise io_error(final, exc) from None

    def write(self, data: bytes) -> None:
        if self.expected_size is not None and self.size + len(data) > self.expected_size:
            # Checked as it arrives: a sender must not fill the disk past what it announced.
            raise CorralError(f"{self.final}: more than the {self.expected_size} bytes "
                              "announced", ErrorCode.IO)
        try:
            self._out.write(data)
        except OSError as exc:
            raise io_error(self.final, exc) from None
        self.size += len(data)

    def finish(self) -> None:
        """Check the size, give the mode and close, without flushing to disk: ``land``
        renames it later, once a sync has covered it (a batch of many small files costs one
        sync, not one each). On a failure nothing is left behind."""
        try:
            self._check_size()
            try:
                self._out.flush()
                os.fchmod(self._out.fileno(), self.mode)
                self._out.close()
            except OSError as exc:
                raise io_error(self.final, exc) from None
        except CorralError:
            self.discard()
            raise

    def _check_size(self) -> None:
        if self.expected_size is not None and self.size != self.expected_size:
            raise CorralError(f"{self.final}: got {self.size} bytes of "
                              f"{self.expected_size}", ErrorCode.IO)

    def commit(self) -> None:
        """Check, flush and rename into place; on any failure nothing is left behind.

        No checksum of the contents: every frame that carried them was authenticated on
        arrival (``common.frame_auth``), in sequence, by the process that wrote them here,
        which proves more than a hash could. Protocol 1 sent a SHA-256 of each file; beside
        the frame MACs it would be a second hash of every byte, as costly as the first."""
        try:
            self._check_size()
            try:
                self._out.flush()
                self._flush(self._out.fileno())
                os.fchmod(self._out.fileno(), self.mode)
                self._out.close()
                os.replace(self.temp, self.final)
            except OSError as exc:
                raise io_error(self.final, exc) from None
        except CorralError:
            self.discard()
            raise
        self._release()

    def discard(self) -> None:
        self._out.close()
        self.temp.unlink(missing_ok=True)
        self._release()



def temp_name(final: Path) -> Path:
    return final.parent / f"{TEMP_PREFIX}{final.name}-{uuid.uuid4().hex[:8]}"


class IncomingLink(_Noted):
    """A symbolic link being received: made under a hidden temporary name beside its
    destination (noted in the ledger), and renamed into place with the files it came with;
    inside a staging folder (``in_place``), made at its own name."""

    def __init__(self, final: Path, target: str, ledger: PartialLedger | None = None,
                 in_place: bool = False) -> None:
        self.final = final
        self.temp = final if in_place else temp_name(final)
        self._ledger = ledger
        try:
            if ledger is not None:
                ledger.opened(self.temp)
            os.symlink(target, self.temp)
        except OSError as exc:
            self._release()
            raise io_error(final, exc) from None

    def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.temp)
        self._release()


class IncomingFolder(_Noted):
    """A new folder being received whole: built under a hidden temporary name beside its
    destination (noted in the ledger), then renamed into place in one step, so a reader
    sees all of it or nothing, and 1,000 files cost one rename."""

    def __init__(self, final: Path, ledger: PartialLedger | None = None) -> None:
        self.final = final
        self.temp = temp_name(final)
        self._ledger = ledger
        try:
            if ledger is not None:
                ledger.opened(self.temp)
            self.temp.mkdir()
        except OSError as exc:
            self._release()
            raise io_error(final, exc) from None

    def land(self) -> None:
        try:
            if os.path.lexists(self.final):  # made by someone else during the copy
                raise FileExistsError(errno.EEXIST, "appeared during the copy")
            os.rename(self.temp, self.final)
        except OSError as exc:
            self.discard()
            raise io_error(self.final, exc) from None
        self._release()

    def discard(self) -> None:
        shutil.rmtree(self.temp, ignore_errors=True)
        self._release()




def _load_syncfs() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None  # not Linux: os.sync() below does it for every file system


_SYNCFS = _load_syncfs()


def sync_folders(folders: Iterable[Path]) -> None:
    """Flush to disk everything written on the file systems holding ``folders``: one
    ``syncfs`` for each file system, whatever the number of files (``os.sync`` where there
    is no ``syncfs``). Files written and closed before the call are on disk after it, and
    so are the renames and new folders."""
    if _SYNCFS is None:
        os.sync()
        return
    done: set[int] = set()
    for folder in folders:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            device = os.fstat(fd).st_dev
            if device not in done and _SYNCFS(fd) != 0:
                error = ctypes.get_errno()
                raise OSError(error, os.strerror(error), str(folder))
            done.add(device)
        finally:
            os.close(fd)
