"""Running one shell command for the master (``run``, and any word the console does not
know): ``/bin/sh -c COMMAND`` with its stdout and stderr captured, under a timeout.

The command is an entry of the process table like any other, so ``pid`` shows it while it
runs and ``kill``/``sKill`` reach it; its output also goes to its log file. When the master
cancels the request (Ctrl-C at the console, or its own request timeout), the command's
process group is stopped and the reply says so.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from pathlib import Path
from typing import IO, Any

import gevent
import gevent.event

from client.proctable import ProcTable
from client.spawn import JobPlace, SpawnFailed
from common.procs import ProcInfo
from common.states import ProcState

log = logging.getLogger("corral.client.shell")

OUTPUT_CAP = 1024 * 1024  # per stream; the rest is counted and dropped
DRAIN_AFTER_EXIT = 0.5  # a background grandchild may hold the pipe open; don't wait on it
STOP_GRACE = 1.0  # after SIGINT, seconds before the whole group gets SIGKILL
READABLE = 1  # libev's EV_READ: an I/O watcher for a descriptor with data to read


def run_shell(procs: ProcTable, program: str, argv: list[str], cwd: Path, timeout: float,
              env: dict[str, str] | None = None, place: JobPlace | None = None
              ) -> dict[str, Any]:
    """Run ``program`` (``/bin/sh -c COMMAND``, or one allowed program) and collect its
    output."""
    started = time.monotonic()
    out_read, out_write = os.pipe2(os.O_CLOEXEC)
    err_read, err_write = os.pipe2(os.O_CLOEXEC)
    try:
        record = procs.spawn(program, argv, cwd, env, pipes=(out_write, err_write),
                             place=place)
    finally:
        os.close(out_write)
        os.close(err_write)
    if record.state is ProcState.SPAWN_FAILED:
        for fd in (out_read, err_read):
            os.close(fd)
        raise SpawnFailed(record.error or "could not start")
    pid = record.pid
    ended: gevent.event.AsyncResult = gevent.event.AsyncResult()

    def on_exit(info: ProcInfo) -> None:
        if info.pid == pid and info.ended_state:
            ended.set(info)

    procs.change_listeners.append(on_exit)  # before any yield: the exit cannot be missed
    output = _Output((out_read, err_read), _LazyLog(record.log_path))
    timed_out = cancelled = False
    try:
        try:
            info = ended.get(timeout=timeout)
        except gevent.Timeout:
            timed_out = True
            _kill_group(pid, signal.SIGKILL)
            info = ended.get()
        except gevent.GreenletExit:  # the master cancelled the request
            cancelled = True
            info = _stop_group(pid, ended)
        with contextlib.suppress(gevent.GreenletExit):
            output.at_end.wait(timeout=DRAIN_AFTER_EXIT)
    finally:
        procs.change_listeners.remove(on_exit)
        (stdout, out_dropped), (stderr, err_dropped) = output.close()
    return {
        "exit_code": info.exit_code,
        "signal": info.signal,
        "stdout": stdout,
        "stderr": stderr,
        "dropped": out_dropped + err_dropped,
        "timed_out": timed_out,
        "duration": time.monotonic() - started,
        "cancelled": cancelled,
        "pid": pid,
    }


class _LazyLog:
    """The command's log file, created at its first byte of output: creating a file costs
    more than the rest of a quick command, and most print little or nothing."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file: IO[bytes] | None = None
        self._failed = False

    def write(self, data: bytes) -> None:
        if self._failed:
            return
        try:
            if self._file is None:  # unbuffered: `log` reads it while the command runs
                self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115 (see close)
            self._file.write(data)
        except OSError as exc:  # the disk is full: the master still gets the output
            self._failed = True
            log.warning("cannot write %s: %s; the rest of its output is not logged",
                        self.path, exc.strerror or exc)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class _Stream:
    """One pipe of a command: what was kept of it, and how much was dropped."""

    def __init__(self, fd: int, watcher: Any) -> None:
        self.fd = fd
        self.watcher = watcher
        self.chunks: list[bytes] = []
        self.kept = self.dropped = 0
        self.open = True

    def keep(self, chunk: bytes) -> None:
        room = OUTPUT_CAP - self.kept
        if room > 0:
            self.chunks.append(chunk[:room])
        self.kept += min(room, len(chunk))
        self.dropped += max(0, len(chunk) - room)


class _Output:
    """A command's stdout and stderr, read as they come: the event loop calls ``_readable``
    when a pipe has data or has ended, with no greenlet waiting on each (two reader
    greenlets cost a quick command more than the rest of its bookkeeping)."""

    def __init__(self, fds: tuple[int, int], log_file: _LazyLog) -> None:
        self.log_file = log_file
        self.at_end = gevent.event.Event()  # set once every pipe has ended
        loop = gevent.get_hub().loop
        self._streams = [_Stream(fd, loop.io(fd, READABLE)) for fd in fds]
        for stream in self._streams:
            os.set_blocking(stream.fd, False)
            stream.watcher.start(self._readable, stream)

    def _readable(self, stream: _Stream) -> None:
        try:
            chunk = os.read(stream.fd, 65536)
        except BlockingIOError:
            return
        if chunk:
            self.log_file.write(chunk)
            stream.keep(chunk)
            return
        stream.open = False
        stream.watcher.stop()
        if not any(s.open for s in self._streams):
            self.at_end.set()

    def close(self) -> list[tuple[bytes, int]]:
        """Stop reading (a background grandchild may still hold a pipe), close both pipes
        and the log; what each stream kept and dropped."""
        for stream in self._streams:
            stream.watcher.close()
            os.close(stream.fd)
        self.log_file.close()
        return [(b"".join(s.chunks), s.dropped) for s in self._streams]


def _stop_group(pid: int, ended: gevent.event.AsyncResult) -> ProcInfo:
    """Stop the command as a terminal's Ctrl-C would (SIGINT to its group); whatever of
    the group is left after a moment (a background job ignores SIGINT) gets SIGKILL."""
    _kill_group(pid, signal.SIGINT)
    try:
        info: ProcInfo = ended.get(timeout=STOP_GRACE)
    except gevent.Timeout:
        _kill_group(pid, signal.SIGKILL)
        return ended.get()
    _kill_group(pid, signal.SIGKILL)
    return info


def _kill_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signum)
