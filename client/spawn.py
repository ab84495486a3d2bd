"""Starting a child process: two methods behind one seam, chosen with ``--spawn``.

Both give the child its own session, stdin from /dev/null (or a given file), stdout and
stderr on one log file, the requested working folder, then exec the program. Both report a
failed exec as ``SpawnFailed`` at once, never as a process that ran and exited 127.

- ``posix``: ``os.posix_spawnp`` with file actions. libc performs the same
  fork -> dup2 -> exec sequence (with vfork, so the parent's size does not matter) and
  returns the exec error to the parent. The default: fast, and safe beside threads.
- ``fork``: the same steps written out with ``os.fork``/``os.dup2``/``os.execvp`` and a
  close-on-exec error pipe, to be read line by line.
"""

from __future__ import annotations

import dataclasses
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.errors import CorralError, ErrorCode

LOG_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND
LOG_MODE = 0o644


class SpawnFailed(CorralError):
    code = ErrorCode.SPAWN_FAILED


@dataclasses.dataclass(frozen=True)
class SpawnSpec:
    argv: list[str]
    cwd: Path
    env: dict[str, str]
    # stdout goes to a file opened for appending, or onto an open descriptor (a pipe)
    stdout_path: Path | None = None
    stdout_fd: int | None = None
    stderr_fd: int | None = None  # None: stderr shares stdout (one file, lines in order)
    stdin_path: Path | None = None  # None: /dev/null

    def __post_init__(self) -> None:
        if (self.stdout_path is None) == (self.stdout_fd is None):
            raise ValueError("give exactly one of stdout_path and stdout_fd")


def spawn_posix(spec: SpawnSpec) -> int:
    """Start ``spec`` with posix_spawnp; return the child's pid."""
    file_actions: list[tuple[Any, ...]] = [
        (os.POSIX_SPAWN_OPEN, 0, str(spec.stdin_path or os.devnull), os.O_RDONLY, 0),
    ]
    if spec.stdout_fd is not None:
        file_actions.append((os.POSIX_SPAWN_DUP2, spec.stdout_fd, 1))
    else:
        file_actions.append((os.POSIX_SPAWN_OPEN, 1, str(spec.stdout_path), LOG_FLAGS, LOG_MODE))
    # stderr onto stdout shares one file offset, so the lines stay in the order written.
    file_actions.append((os.POSIX_SPAWN_DUP2, spec.stderr_fd if spec.stderr_fd is not None
                         else 1, 2))
    # posix_spawn has no chdir action in Python 3.11, so the parent changes folder around
    # the call when the child needs another one. The client runs greenlets in one thread
    # and this does not yield, so no other code can observe the borrowed working folder.
    home = os.getcwd()
    borrow = home != str(spec.cwd)
    try:
        if borrow:
            os.chdir(spec.cwd)
        return os.posix_spawnp(spec.argv[0], spec.argv, spec.env,
                               file_actions=file_actions, setsid=True)
    except OSError as exc:
        raise SpawnFailed(_reason(exc)) from None
    finally:
        if borrow:
            os.chdir(home)


def spawn_fork(spec: SpawnSpec) -> int:
    """Start ``spec`` with fork, dup2 and execvp; return the child's pid."""
    # The pipe is close-on-exec: a successful exec closes the child's end, so the parent
    # reads EOF. If anything fails first, the child writes its errno and exits.
    error_read, error_write = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        _become_child(spec, error_read, error_write)  # never returns
    os.close(error_write)
    try:
        report = _read_all(error_read)
    finally:
        os.close(error_read)
    if not report:
        return pid  # EOF: the exec succeeded
    # The child failed before exec and has _exit()ed; collect it here, before any other
    # code runs, so that nothing else ever sees this pid.
    os.waitpid(pid, 0)
    (errno,) = struct.unpack("i", report[:4])
    where = report[4:].decode(errors="replace")
    raise SpawnFailed(_reason(OSError(errno, os.strerror(errno), where or None)))


def _become_child(spec: SpawnSpec, error_read: int, error_write: int) -> None:
    try:
        os.close(error_read)
        os.setsid()  # own session and process group: signals to the group reach only it
        stage = str(spec.stdin_path or os.devnull)
        stdin_fd = os.open(stage, os.O_RDONLY)
        os.dup2(stdin_fd, 0)
        if spec.stdout_fd is not None:
            out_fd = spec.stdout_fd
        else:
            stage = str(spec.stdout_path)
            out_fd = os.open(stage, LOG_FLAGS, LOG_MODE)
        os.dup2(out_fd, 1)
        # stderr onto stdout shares one file offset, so the lines stay in the order written.
        os.dup2(spec.stderr_fd if spec.stderr_fd is not None else out_fd, 2)
        for fd in (stdin_fd, out_fd):
            if fd > 2:
                os.close(fd)
        stage = str(spec.cwd)
        os.chdir(spec.cwd)
        stage = spec.argv[0]
        os.execvpe(spec.argv[0], spec.argv, spec.env)
    except OSError as exc:
        os.write(error_write, struct.pack("i", exc.errno or 0) + stage.encode()[:200])
    finally:
        os._exit(127)  # only reached if exec failed; never return into the parent's code


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    return b"".join(chunks)


def _reason(exc: OSError) -> str:
    text = exc.strerror or str(exc)
    return f"{text}: {exc.filename}" if exc.filename else text


SPAWNERS: dict[str, Callable[[SpawnSpec], int]] = {"posix": spawn_posix, "fork": spawn_fork}
