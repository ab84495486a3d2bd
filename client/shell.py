"""Running one shell command for the master (``run``, and any word the console does not
know): ``/bin/sh -c COMMAND`` with its stdout and stderr captured, under a timeout.

The command is an entry of the process table like any other, so ``pid`` shows it while it
runs and ``kill``/``sKill`` reach it; its output also goes to its log file. When the master
cancels the request (Ctrl-C at the console, or its own request timeout), the command's
process group is stopped and the reply says so.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import IO, Any

import gevent
import gevent.event
import gevent.socket

from client.proctable import ProcTable
from client.spawn import JobPlace, SpawnFailed
from common.procs import ProcInfo
from common.states import ProcState

OUTPUT_CAP = 1024 * 1024  # per stream; the rest is counted and dropped
DRAIN_AFTER_EXIT = 0.5  # a background grandchild may hold the pipe open; don't wait on it
STOP_GRACE = 1.0  # after SIGINT, seconds before the whole group gets SIGKILL


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
    log_file = _LazyLog(record.log_path)
    readers = [gevent.spawn(_collect, out_read, log_file),
               gevent.spawn(_collect, err_read, log_file)]
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
            gevent.joinall(readers, timeout=DRAIN_AFTER_EXIT)
    finally:
        procs.change_listeners.remove(on_exit)
        gevent.killall(readers)
        for fd in (out_read, err_read):
            os.close(fd)
        log_file.close()
    (stdout, out_dropped), (stderr, err_dropped) = (r.value or (b"", 0) for r in readers)
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

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[bytes] | None = None

    def write(self, data: bytes) -> None:
        if self._file is None:  # unbuffered: `log` reads it while the command runs
            self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115 (closed in close)
        self._file.write(data)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _collect(fd: int, log_file: _LazyLog) -> tuple[bytes, int]:
    os.set_blocking(fd, False)
    chunks: list[bytes] = []
    kept = dropped = 0
    try:
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                gevent.socket.wait_read(fd)
                continue
            if not chunk:
                break
            log_file.write(chunk)
            room = OUTPUT_CAP - kept
            chunks.append(chunk[:room])
            kept += min(room, len(chunk))
            dropped += max(0, len(chunk) - room)
    except gevent.GreenletExit:
        pass
    return b"".join(chunks), dropped


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
