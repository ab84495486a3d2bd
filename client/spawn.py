"""Starting a child process: two methods behind one seam, chosen with ``--spawn``.

Both give the child its own session, stdin from /dev/null (or a given file), stdout and
stderr on one log file, the requested working folder, and nothing else of the client's:
only descriptors 0, 1 and 2, every signal at its default action and an empty signal mask.
Both execute exactly ``SpawnSpec.program``, an absolute path the client found itself
(``find_program``), never a search on a PATH the request set. Both report a failed exec as
``SpawnFailed`` at once, never as a process that ran and exited 127.

- ``posix``: ``os.posix_spawn`` with file actions and attributes. libc performs the same
  fork -> dup2 -> exec sequence (with vfork, so the parent's size does not matter) and
  returns the exec error to the parent. The default: fast, and safe beside threads.
- ``fork``: the same steps written out with ``os.fork``/``os.dup2``/``os.execve`` and a
  close-on-exec error pipe, to be read line by line.
- ``student``: a stub (``spawn_student``) for a student to write; ``make check-spawn``
  tests it.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import os
import signal
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.errors import CorralError, ErrorCode
from common.jobs import JOB_VARIABLES

LOG_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND
LOG_MODE = 0o644
# Every signal a program may use. (glibc keeps two more, 32 and 33, for its threads; Python
# cannot name them, and glibc's posix_spawn leaves them ignored in the child: see
# docs/processes.md.) SIGKILL and SIGSTOP cannot be caught or ignored, so they are never
# reset: some C libraries fail the spawn when asked to.
ALL_SIGNALS = frozenset(signal.valid_signals())
RESETTABLE_SIGNALS = ALL_SIGNALS - {signal.SIGKILL, signal.SIGSTOP}
# Where the kernel lists this process's open descriptors (Linux; /dev/fd elsewhere).
FD_FOLDER = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"


class SpawnFailed(CorralError):
    code = ErrorCode.SPAWN_FAILED


@dataclasses.dataclass(frozen=True)
class SpawnSpec:
    program: str  # the absolute path to execute (``find_program``); argv[0] is only a name
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
        if not os.path.isabs(self.program):
            raise ValueError(f"the program must be an absolute path, not {self.program!r}")


@dataclasses.dataclass(frozen=True)
class JobPlace:
    """Where a process stands in a corral job; it learns it from its environment."""

    node: str
    job: str  # J12
    rank: int
    size: int

    def environment(self) -> dict[str, str]:
        return {"CORRAL_NODE": self.node, "CORRAL_JOB": self.job,
                "CORRAL_RANK": str(self.rank), "CORRAL_SIZE": str(self.size),
                "CORRAL_REF": f"{self.job}.{self.rank}"}


def inheritable_environment(environ: dict[str, str]) -> dict[str, str]:
    """The client's own environment as its children start from it: without the job
    variables (the client may itself run inside a job), which only ``job_environment``
    sets."""
    return {name: value for name, value in environ.items() if name not in JOB_VARIABLES}


def job_environment(base: dict[str, str], requested: dict[str, str] | None,
                    place: JobPlace | None) -> dict[str, str]:
    """A child's environment: the client's own (``inheritable_environment``), then what
    the request sets (never a job variable: the handlers refuse those), then its place in
    its job, last, so that nothing else can forge it."""
    if not requested and place is None:
        return base
    env = {**base, **(requested or {})}
    if place is not None:
        env.update(place.environment())
    return env


def find_program(name: str, folder: Path) -> str | None:
    """The absolute path of the program ``name`` names: the one PATH rule of both methods.

    A name with a slash is a path, taken relative to ``folder``, the folder the process
    will start in (exactly where the kernel would look). A bare name is searched on the
    client's own PATH, never on a PATH the request sets (that one only reaches the child's
    environment), and only in absolute folders: an empty or relative PATH entry would
    search the request's folder. Like ``execvp``, a file found without execute permission
    is kept in case nothing better comes, so the exec reports "Permission denied".
    None when there is no such file.
    """
    if "/" in name:
        return os.path.join(folder, name)
    fallback = None
    for entry in os.environ.get("PATH", os.defpath).split(os.pathsep):
        if not os.path.isabs(entry):
            continue
        candidate = os.path.join(entry, name)
        if os.path.isfile(candidate):
            if os.access(candidate, os.X_OK):
                return candidate
            fallback = fallback or candidate
    return fallback


# Past any descriptor number: os.closerange clamps it to the process's real maximum.
DESCRIPTOR_CEILING = 2**31 - 1


def inherited_descriptors() -> list[int]:
    """Descriptors above 2 that this process has open without close-on-exec: every one
    would leak into a child. (Those with close-on-exec are closed by exec itself.)"""
    leaking = []
    for name in os.listdir(FD_FOLDER):
        fd = int(name)
        if fd <= 2:
            continue
        try:
            flags = fcntl.fcntl(fd, fcntl.F_GETFD)
        except OSError:
            continue  # the listing's own descriptor, closed by now
        if not flags & fcntl.FD_CLOEXEC:
            leaking.append(fd)
    return leaking


def spawn_posix(spec: SpawnSpec) -> int:
    """Start ``spec`` with posix_spawn; return the child's pid."""
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
    # Then close, in the child only, whatever else would survive the exec.
    file_actions.extend((os.POSIX_SPAWN_CLOSE, fd) for fd in inherited_descriptors())
    # posix_spawn has no chdir action in Python 3.11, so the parent changes folder around
    # the call when the child needs another one. The client runs greenlets in one thread
    # and this does not yield, so no other code can observe the borrowed working folder.
    home = os.getcwd()
    borrow = home != str(spec.cwd)
    try:
        if borrow:
            os.chdir(spec.cwd)
        # posix_spawn, not posix_spawnp: the path is already found, no PATH is searched.
        # setsigdef resets every signal to its default action (Python ignores SIGPIPE
        # and SIGXFSZ, and ignored signals survive exec); setsigmask=() unblocks all.
        return os.posix_spawn(spec.program, spec.argv, spec.env, file_actions=file_actions,
                              setsid=True, setsigdef=RESETTABLE_SIGNALS, setsigmask=())
    except OSError as exc:
        raise SpawnFailed(_reason(_failed_file_action(spec) or exc)) from None
    except ValueError as exc:  # a NUL byte in an argument, "=" in a variable's name
        raise SpawnFailed(str(exc)) from None
    finally:
        if borrow:
            os.chdir(home)


def _failed_file_action(spec: SpawnSpec) -> OSError | None:
    """Which file posix_spawn could not open, if it was one of ours: it reports only the
    errno of the step that failed, and Python names the program whatever that step was,
    so a missing log folder would read "No such file or directory: /bin/sleep"."""
    if spec.stdin_path is not None:
        try:
            os.close(os.open(spec.stdin_path, os.O_RDONLY))
        except OSError as exc:
            return exc
    if spec.stdout_path is not None:
        folder = spec.stdout_path.parent
        if not folder.is_dir():
            return FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(folder))
        target = spec.stdout_path if spec.stdout_path.exists() else folder
        if not os.access(target, os.W_OK):
            return PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(target))
    return None


def spawn_fork(spec: SpawnSpec) -> int:
    """Start ``spec`` with fork, dup2 and execve; return the child's pid."""
    # The pipe is close-on-exec: a successful exec closes the child's end, so the parent
    # reads EOF. If anything fails first, the child writes its errno and exits.
    error_read, error_write = os.pipe2(os.O_CLOEXEC)
    # Block every signal across the fork, so none of the parent's handlers can run in the
    # child before the child has put every signal back to its default.
    parent_mask = signal.pthread_sigmask(signal.SIG_BLOCK, ALL_SIGNALS)
    pid = os.fork()
    if pid == 0:
        _become_child(spec, error_read, error_write)  # never returns
    signal.pthread_sigmask(signal.SIG_SETMASK, parent_mask)
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
    (error_number,) = struct.unpack("i", report[:4])
    where = report[4:].decode(errors="replace")
    if not error_number:
        raise SpawnFailed(where)
    raise SpawnFailed(_reason(OSError(error_number, os.strerror(error_number), where or None)))


def _become_child(spec: SpawnSpec, error_read: int, error_write: int) -> None:
    try:
        os.close(error_read)
        stage = "signals"
        _default_signals()
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
        # Close every descriptor above 2 but the error pipe (close-on-exec: exec closes
        # it). All of them, not a list made before the fork: another thread of the parent
        # may have opened one since. Linux does each range in one close_range(2) call.
        os.closerange(3, error_write)
        os.closerange(error_write + 1, DESCRIPTOR_CEILING)
        stage = str(spec.cwd)
        os.chdir(spec.cwd)
        stage = spec.program
        os.execve(spec.program, spec.argv, spec.env)  # execve: no PATH search
    except BaseException as exc:  # anything at all: the parent must hear of it
        error_number = (exc.errno or 0) if isinstance(exc, OSError) else 0
        where = stage if error_number else f"{stage}: {exc}"
        os.write(error_write, struct.pack("i", error_number) + where.encode()[:200])
    finally:
        os._exit(127)  # only reached if exec failed; never return into the parent's code


def _default_signals() -> None:
    """Every signal back to its default action, then an empty mask (undoing the block)."""
    for signum in RESETTABLE_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    return b"".join(chunks)


def _reason(exc: OSError) -> str:
    text = exc.strerror or str(exc)
    return f"{text}: {exc.filename}" if exc.filename else text


def spawn_student(spec: SpawnSpec) -> int:
    """Start ``spec`` and return the child's pid: yours to write (``--spawn student``).

    ``make check-spawn`` runs the spawn tests against this function, and a real client
    started with ``--spawn student``; each failure says what is missing and why it matters.
    Use only ``os`` and ``signal`` calls (``os.pipe2``, ``os.fork``, ``os.setsid``,
    ``os.open``, ``os.dup2``, ``os.close``, ``os.closerange``, ``os.chdir``, ``os.execve``,
    ``os._exit``, ``os.waitpid``, ``signal.signal``, ``signal.pthread_sigmask``). The steps:

    1. Make a pipe with ``os.O_CLOEXEC``: the child will report a failed exec through it.
    2. Block every signal (``ALL_SIGNALS``) before forking, and restore the parent's mask
       after, so none of the client's handlers can run in the child.
    3. In the child (``os.fork()`` returned 0), in a ``try`` that ends in ``os._exit(127)``:
       - close the pipe's read end; put every signal of ``RESETTABLE_SIGNALS`` back to
         ``SIG_DFL`` and unblock them all (exec keeps ignored signals and the mask);
       - ``os.setsid()``: a session and process group of its own;
       - stdin: open ``spec.stdin_path`` (or ``os.devnull``) and ``dup2`` it onto 0;
         stdout: open ``spec.stdout_path`` with ``LOG_FLAGS, LOG_MODE`` (or take
         ``spec.stdout_fd``) and ``dup2`` onto 1; stderr: ``dup2`` onto 2 the same
         descriptor (or ``spec.stderr_fd``);
       - close every descriptor above 2 except the pipe's write end: ``os.closerange(3,
         w)`` and ``os.closerange(w + 1, DESCRIPTOR_CEILING)`` (a list made in the parent
         before the fork, as ``inherited_descriptors()`` makes for posix_spawn, can miss
         one another thread opened in between);
       - ``os.chdir(spec.cwd)``, then ``os.execve(spec.program, spec.argv, spec.env)``;
       - if anything raised: write ``struct.pack("i", errno)`` and the file's name to the
         pipe. Never return into the parent's code, never ``sys.exit``.
    4. In the parent: close the pipe's write end (or ``read`` never sees EOF), read the
       read end until EOF. Nothing read: the exec succeeded, return the pid and do not wait
       for it (the reaper collects it). Bytes read: ``os.waitpid(pid, 0)`` the dead child,
       then ``raise SpawnFailed("No such file or directory: /the/program")``: the reason
       and the file, as ``_reason(OSError(errno, os.strerror(errno), filename))`` writes it.

    ``spawn_fork`` above is one answer; try first without reading it.
    """
    raise SpawnFailed("spawn_student in client/spawn.py is not written yet: the student "
                      "spawn method starts nothing until you write it")


# "student" starts nothing until written; the client offers it so a course can try theirs.
SPAWNERS: dict[str, Callable[[SpawnSpec], int]] = {
    "posix": spawn_posix, "fork": spawn_fork, "student": spawn_student}
# The methods that work out of the box, which the test suite checks by default.
WORKING_SPAWNERS = ("posix", "fork")
