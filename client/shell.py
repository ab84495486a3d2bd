"""Running one shell command for the master (``run``, and any word the console does not
know): ``/bin/sh -c COMMAND`` with its stdout and stderr captured, under a timeout."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import gevent.socket

from client.reaper import Reaper
from client.spawn import SpawnSpec

OUTPUT_CAP = 1024 * 1024  # per stream; the rest is counted and dropped
DRAIN_AFTER_EXIT = 0.5  # a background grandchild may hold the pipe open; don't wait on it


def run_shell(reaper: Reaper, spawner: Callable[[SpawnSpec], int], program: str,
              argv: list[str], cwd: Path, timeout: float) -> dict[str, Any]:
    """Run ``program`` (``/bin/sh -c COMMAND``, or one allowed program) and collect its
    output."""
    started = time.monotonic()
    out_read, out_write = os.pipe2(os.O_CLOEXEC)
    err_read, err_write = os.pipe2(os.O_CLOEXEC)
    try:
        pid = spawner(SpawnSpec(program=program, argv=argv, cwd=cwd, env=dict(os.environ),
                                stdout_fd=out_write, stderr_fd=err_write))
    except BaseException:
        for fd in (out_read, err_read):
            os.close(fd)
        raise
    finally:
        os.close(out_write)
        os.close(err_write)
    status = gevent.event.AsyncResult()
    reaper.watch(pid, lambda _pid, wait_status, _usage: status.set(wait_status))
    readers = [gevent.spawn(_collect, out_read), gevent.spawn(_collect, err_read)]
    timed_out = False
    try:
        wait_status = status.get(timeout=timeout)
    except gevent.Timeout:
        timed_out = True
        _kill_group(pid)
        wait_status = status.get()
    gevent.joinall(readers, timeout=DRAIN_AFTER_EXIT)
    gevent.killall(readers)
    for fd in (out_read, err_read):
        os.close(fd)
    (stdout, out_dropped), (stderr, err_dropped) = (r.value or (b"", 0) for r in readers)
    return {
        "exit_code": os.WEXITSTATUS(wait_status) if os.WIFEXITED(wait_status) else None,
        "signal": os.WTERMSIG(wait_status) if os.WIFSIGNALED(wait_status) else None,
        "stdout": stdout,
        "stderr": stderr,
        "dropped": out_dropped + err_dropped,
        "timed_out": timed_out,
        "duration": time.monotonic() - started,
    }


def _collect(fd: int) -> tuple[bytes, int]:
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
            room = OUTPUT_CAP - kept
            chunks.append(chunk[:room])
            kept += min(room, len(chunk))
            dropped += max(0, len(chunk) - room)
    except gevent.GreenletExit:
        pass
    return b"".join(chunks), dropped


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
