"""What every spawn method must do, checked in this process, with failure messages that say
what is wrong and why it matters: they are what a student reads after `make check-spawn`.

Each ``check_*`` function takes a spawn method; the tests run them against the methods in
``CORRAL_SPAWN_METHODS`` (posix and fork by default, the student's under check-spawn), and
``test_the_checks_catch_a_naive_spawn`` proves each check fails, with its lesson, on a
spawn written the naive way.
"""

from __future__ import annotations

import os
import resource
import signal
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from client.spawn import SPAWNERS, SpawnFailed, SpawnSpec, find_program
from tests.conftest import SPAWN_METHODS
from tests.harness import wait_until

Spawner = Callable[[SpawnSpec], int]
SH = find_program("sh", Path("/")) or "/bin/sh"
SLEEP = find_program("sleep", Path("/")) or "/bin/sleep"
# glibc's own signals 32 and 33 (see docs/processes.md): no program may use them.
GLIBC_INTERNAL = (1 << 31) | (1 << 32)


def spec(tmp_path: Path, program: str, *argv: str) -> SpawnSpec:
    return SpawnSpec(program=program, argv=[os.path.basename(program), *argv], cwd=tmp_path,
                     env={"PATH": os.defpath}, stdout_path=tmp_path / "out.log")


def start(spawner: Spawner, what: SpawnSpec) -> int:
    try:
        pid = spawner(what)
    except SpawnFailed as exc:
        raise AssertionError(f"starting {what.argv} raised SpawnFailed({exc.message!r}): the "
                             "program exists and can run, so the spawn itself went wrong "
                             "(read the reason)") from None
    assert isinstance(pid, int) and pid > 0, (
        f"the spawn returned {pid!r}: it must return the child's pid (what os.fork() "
        "returned in the parent)")
    return pid


def finish(pid: int) -> tuple[int, resource.struct_rusage]:
    try:
        _, status, usage = os.wait4(pid, 0)
    except ChildProcessError:
        raise AssertionError(
            f"wait4({pid}) says the test process has no such child: either the pid returned "
            "is not the child's, or the spawn already waited for it. After a successful exec "
            "the spawn must return without waiting: the client's reaper collects the exit "
            "status and rusage later") from None
    return status, usage


def children() -> set[int]:
    """This process's children, zombies included (what other tests left running too)."""
    return {child.pid for child in psutil.Process().children()}


def no_new_children(before: set[int], after: str) -> None:
    left = children() - before
    if left:
        raise AssertionError(
            f"after {after}, the test process still has children {sorted(left)}: a child "
            "that failed before exec must be collected with os.waitpid(pid, 0) by the spawn "
            "itself, or it stays a zombie; and the spawn must not start extra processes")


def status_fields(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def running_program(pid: int, program: str) -> None:
    wait_until(lambda: os.readlink(f"/proc/{pid}/exe") == os.path.realpath(program),
               what=f"pid {pid} to be running {program}")


def settled_in_sleep(pid: int) -> None:
    """Wait until ``sleep`` sleeps: just after exec, the loader still opens (and closes)
    its shared libraries as descriptor 3 and up, which is no leak."""
    def asleep() -> bool:
        wchan = Path(f"/proc/{pid}/wchan").read_text()
        return "sleep" in wchan or (wchan in ("", "0") and status_fields(pid)["State"][0] == "S")
    wait_until(asleep, what=f"pid {pid} to be asleep in sleep(1)")


def stop(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


# --- the checks ------------------------------------------------------------------------------

def _target(pid: int, fd: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError as exc:
        return f"? ({exc.strerror})"


def check_descriptors(spawner: Spawner, tmp_path: Path) -> None:
    """Only 0, 1, 2 in the child: stdin /dev/null, stdout and stderr the log."""
    leak = os.open(tmp_path, os.O_RDONLY)
    os.set_inheritable(leak, True)  # as a careless parent's descriptor would be
    try:
        pid = start(spawner, spec(tmp_path, SLEEP, "30"))
    finally:
        os.close(leak)
    try:
        running_program(pid, SLEEP)
        settled_in_sleep(pid)
        fds = sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd"))
        extra = {fd: _target(pid, fd) for fd in fds if fd > 2}
        assert not extra, (
            f"the child still has descriptors {extra} open ({leak} was an inheritable "
            "descriptor of the parent): exec keeps every descriptor that is not close-on-exec. "
            "In the child, after the dup2s, close every descriptor above 2 but the error "
            "pipe (os.closerange), which also closes what the child opened itself. A leaked "
            "pipe end keeps its reader from ever seeing EOF; a leaked socket keeps a "
            "connection open")
        for fd in (0, 1, 2):
            assert fd in fds, f"the child has no descriptor {fd}: dup2 something onto it"
        link = {fd: os.readlink(f"/proc/{pid}/fd/{fd}") for fd in (0, 1, 2)}
        assert link[0] == os.devnull, (
            f"the child's stdin is {link[0]}, not /dev/null: open os.devnull (or "
            "spec.stdin_path) and dup2 it onto 0, or the program reads the client's stdin")
        log = str(tmp_path / "out.log")
        assert link[1] == log and link[2] == log, (
            f"stdout is {link[1]} and stderr {link[2]}; both must be the log {log}: open it "
            "once with LOG_FLAGS and dup2 that one descriptor onto 1 and onto 2")
        flags = Path(f"/proc/{pid}/fdinfo/1").read_text().split("flags:")[1].split()[0]
        assert int(flags, 8) & os.O_APPEND, (
            "the log is not open with O_APPEND: use LOG_FLAGS, so every write lands at the "
            "end of the file and nothing overwrites what another write put there")
        assert os.getsid(pid) == pid, (
            "the child does not lead a session of its own: call os.setsid() in the child, so "
            "that kill reaches its process group and nothing else, and no terminal's Ctrl-C "
            "reaches it")
    finally:
        stop(pid)


def check_signals(spawner: Spawner, tmp_path: Path) -> None:
    """Every signal at its default action, none blocked, in the child."""
    ignored_before = signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    caught_before = signal.signal(signal.SIGUSR2, lambda *_: None)
    mask_before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    try:
        pid = start(spawner, spec(tmp_path, SLEEP, "30"))
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask_before)
        signal.signal(signal.SIGUSR1, ignored_before)
        signal.signal(signal.SIGUSR2, caught_before)
    try:
        running_program(pid, SLEEP)
        fields = status_fields(pid)
        ignored = int(fields["SigIgn"], 16) & ~GLIBC_INTERNAL
        blocked = int(fields["SigBlk"], 16)
        names = [signal.Signals(n).name for n in range(1, 65)
                 if ignored & (1 << (n - 1)) and n in signal.Signals._value2member_map_]
        assert not ignored, (
            f"signals {names} are ignored in the child (the parent ignored SIGUSR1; Python "
            "ignores SIGPIPE and SIGXFSZ): exec resets caught signals but keeps ignored ones. "
            "In the child, set every signal of RESETTABLE_SIGNALS to SIG_DFL before exec, or "
            "`yes | head -1` prints 'Broken pipe' instead of ending quietly")
        blocked_names = [signal.Signals(n).name for n in range(1, 65)
                         if blocked & (1 << (n - 1)) and n in signal.Signals._value2member_map_]
        assert not blocked, (
            f"signals {blocked_names} are blocked in the child: the signal mask survives fork "
            "and exec. Unblock everything in the child with "
            "signal.pthread_sigmask(signal.SIG_SETMASK, ()) after resetting the handlers")
    finally:
        stop(pid)
    blocked_now = signal.pthread_sigmask(signal.SIG_BLOCK, ())
    assert blocked_now == mask_before, (
        f"after the spawn the parent blocks {sorted(blocked_now)}, before it blocked "
        f"{sorted(mask_before)}: restore the parent's mask right after fork "
        "(pthread_sigmask(SIG_SETMASK, the mask SIG_BLOCK returned))")


def check_exec_failure(spawner: Spawner, tmp_path: Path) -> None:
    """A program that cannot run is a SpawnFailed at once, never a pid that exits 127."""
    missing = str(tmp_path / "no-such-program")
    before = children()
    try:
        pid = spawner(spec(tmp_path, missing))
    except SpawnFailed as exc:
        assert "No such file or directory" in exc.message and missing in exc.message, (
            f"the spawn failed with {exc.message!r}; say why and what: "
            f"'No such file or directory: {missing}' (the errno's text and the file)")
    else:
        os.waitpid(pid, 0)
        raise AssertionError(
            f"starting {missing}, which does not exist, returned pid {pid}: the child's exec "
            "failed but the parent never heard, so the operator would see a process that "
            "exited 127. Make a pipe with O_CLOEXEC before fork; in the child, on failure, "
            "write the errno to it and os._exit(127); in the parent, close the write end and "
            "read: EOF means the exec succeeded (close-on-exec closed the child's end), bytes "
            "mean raise SpawnFailed")
    no_new_children(before, "a failed spawn")
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(SpawnFailed, match="Permission denied"):
        spawner(spec(tmp_path, str(script)))
    no_new_children(before, "a spawn that failed with 'Permission denied'")


def check_no_zombies(spawner: Spawner, tmp_path: Path) -> None:
    """Each successful spawn leaves exactly one child, for the reaper to collect."""
    before = children()
    pids = [start(spawner, spec(tmp_path, SH, "-c", "exit 0")) for _ in range(20)]
    for pid in pids:
        finish(pid)
    no_new_children(before, "collecting every child the spawn returned")


def check_exit_status_and_rusage(spawner: Spawner, tmp_path: Path) -> None:
    """The status and rusage wait4 reports are the program's own."""
    status, _ = finish(start(spawner, spec(tmp_path, SH, "-c", "exit 7")))
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 7, (
        f"`sh -c 'exit 7'` ended with wait status {status:#x}, not exit 7: exit code 127 "
        "means the child's _exit(127) ran, so its exec failed without the parent hearing; "
        "check that execve gets spec.program, spec.argv and spec.env")
    status, _ = finish(start(spawner, spec(tmp_path, SH, "-c", "kill -TERM $$")))
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM, (
        f"`sh -c 'kill -TERM $$'` ended with wait status {status:#x}, not killed by SIGTERM: "
        "SIGTERM must be at its default action in the child")
    burn = "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done"
    status, usage = finish(start(spawner, spec(tmp_path, SH, "-c", burn)))
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert usage.ru_utime > 0, (
        "wait4 reported no user CPU time for a busy loop: the pid returned is not the "
        "program's, or the rusage went to someone else")
    (tmp_path / "sub").mkdir()
    where = spec(tmp_path, SH, "-c", 'pwd; echo "$GREETING"')
    where = SpawnSpec(program=where.program, argv=where.argv, cwd=tmp_path / "sub",
                      env={"GREETING": "hello"}, stdout_path=tmp_path / "where.log")
    finish(start(spawner, where))
    assert (tmp_path / "where.log").read_text().splitlines() == [str(tmp_path / "sub"),
                                                                "hello"], (
        "the child did not run in spec.cwd with spec.env: os.chdir(spec.cwd) in the child, "
        "then os.execve(spec.program, spec.argv, spec.env)")


CHECKS = [check_descriptors, check_signals, check_exec_failure, check_no_zombies,
          check_exit_status_and_rusage]


@pytest.fixture(params=SPAWN_METHODS)
def spawner(request: pytest.FixtureRequest) -> Spawner:
    return SPAWNERS[request.param]


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__[len("check_"):])
def test_spawn_contract(spawner: Spawner, check: Callable[[Spawner, Path], None],
                        tmp_path: Path) -> None:
    check(spawner, tmp_path)


# --- the checks themselves: each fails, with its lesson, on a naive spawn --------------------

def naive_spawn(what: SpawnSpec) -> int:
    """fork, dup2 the log, execve; nothing else: how a first attempt looks."""
    pid = os.fork()
    if pid == 0:
        try:
            log = os.open(what.stdout_path or os.devnull, os.O_WRONLY | os.O_CREAT, 0o644)
            os.dup2(log, 1)
            os.dup2(log, 2)
            os.chdir(what.cwd)
            os.execve(what.program, what.argv, what.env)
        finally:
            os._exit(127)
    return pid


def waiting_spawn(what: SpawnSpec) -> int:
    """Right steps, but it waits for the child itself, so the reaper gets nothing."""
    pid = SPAWNERS["fork"](what)
    os.waitpid(pid, 0)
    return pid


def silent_failure_spawn(what: SpawnSpec) -> int:
    """Reads the error pipe, but forgets the dead child when the exec failed."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            os.execve(what.program, what.argv, what.env)
        except OSError as exc:
            os.write(write_end, struct.pack("i", exc.errno or 0))
        finally:
            os._exit(127)
    os.close(write_end)
    report = os.read(read_end, 4)
    os.close(read_end)
    if report:
        code = struct.unpack("i", report)[0]
        raise SpawnFailed(f"{os.strerror(code)}: {what.program}")
    return pid


@pytest.fixture
def reap_leftovers() -> Iterator[None]:
    """Collect what a broken spawn left, and only that (other tests' children stay)."""
    before = children()
    yield
    for pid in children() - before:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


# Under `make check-spawn` only the student's method is tested, not these checks.
checking_the_checks = pytest.mark.skipif(SPAWN_METHODS == ["student"],
                                         reason="tests of the checks themselves")


@checking_the_checks
@pytest.mark.parametrize(("broken", "check", "lesson"), [
    (naive_spawn, check_descriptors, "exec keeps every descriptor"),
    (naive_spawn, check_signals, "exec resets caught signals but keeps ignored ones"),
    (naive_spawn, check_exec_failure, "the parent never heard"),
    (waiting_spawn, check_no_zombies, "the spawn already waited for it"),
    (silent_failure_spawn, check_exec_failure, "stays a zombie"),
])
def test_the_checks_catch_a_naive_spawn(broken: Spawner, check: Callable[[Spawner, Path], None],
                                        lesson: str, tmp_path: Path,
                                        reap_leftovers: None) -> None:
    with pytest.raises(AssertionError, match=lesson):
        check(broken, tmp_path)


@checking_the_checks
def test_the_student_stub_says_it_is_not_written(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="not written yet"):
        check_no_zombies(SPAWNERS["student"], tmp_path)
