"""A child of a real client inherits nothing it should not: only descriptors 0, 1 and 2,
every signal at its default, an empty mask. Both spawn methods."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from master.api import MasterAPI
from tests.harness import wait_until


@pytest.fixture
def leaky_client(ready_client, tmp_path: Path) -> Iterator[object]:  # type: ignore[no-untyped-def]
    """A client started the way a careless shell would: an open file and a pipe's write
    end inherited (fds 10 and 251), SIGUSR1 ignored and SIGUSR2 blocked."""
    stray = tmp_path / "stray"
    stray.write_text("")
    file_fd = os.open(stray, os.O_RDONLY)
    pipe_read, pipe_write = os.pipe()

    def careless_shell() -> None:  # runs in the client's process, before its exec
        os.dup2(file_fd, 10)  # os.dup2 makes inheritable descriptors
        os.dup2(pipe_write, 251)
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})

    try:
        yield ready_client("n1", popen={"close_fds": False, "preexec_fn": careless_shell})
    finally:
        for fd in (file_fd, pipe_read, pipe_write):
            os.close(fd)


# glibc's own signals 32 and 33: its posix_spawn leaves them ignored in the child, and
# Python cannot ask for them to be reset (docs/processes.md). No program may use them.
GLIBC_INTERNAL = (1 << 31) | (1 << 32)


def status_masks(pid: int) -> dict[str, int]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = dict(line.split(":\t", 1) for line in lines if ":\t" in line)
    return {key: int(fields[key], 16) for key in ("SigIgn", "SigBlk")}


def program_masks(pid: int) -> dict[str, int]:
    masks = status_masks(pid)
    return {"SigIgn": masks["SigIgn"] & ~GLIBC_INTERNAL, "SigBlk": masks["SigBlk"]}


def test_the_client_itself_has_the_leaks(master: MasterAPI, leaky_client) -> None:
    # Without this, the test below could pass for want of anything to leak.
    fds = set(os.listdir(f"/proc/{leaky_client.pid}/fd"))  # type: ignore[attr-defined]
    assert {"10", "251"} <= fds
    masks = status_masks(leaky_client.pid)  # type: ignore[attr-defined]
    assert masks["SigIgn"] & (1 << (signal.SIGUSR1 - 1))
    assert masks["SigBlk"] & (1 << (signal.SIGUSR2 - 1))


def test_a_child_gets_only_stdin_stdout_stderr_and_default_signals(
        master: MasterAPI, leaky_client) -> None:
    group = master.exec("n1", ["sleep", "60"])
    (info,) = group.results["n1"]
    fd_folder = Path(f"/proc/{info.pid}/fd")
    wait_until(lambda: os.readlink(f"/proc/{info.pid}/exe").endswith("sleep"),
               what="sleep executed")
    # sleep may hold a locale file open for a moment as it starts; an inherited descriptor
    # would stay open for good, so waiting for exactly 0, 1, 2 cannot hide a leak.
    wait_until(lambda: sorted(int(fd) for fd in os.listdir(fd_folder)) == [0, 1, 2],
               timeout=10, what=f"only 0, 1, 2 open (now {sorted(os.listdir(fd_folder))})")
    assert os.readlink(fd_folder / "0") == os.devnull
    assert os.readlink(fd_folder / "1") == os.readlink(fd_folder / "2") == info.log
    assert program_masks(info.pid) == {"SigIgn": 0, "SigBlk": 0}


def test_a_pipe_into_head_ends_quietly(master: MasterAPI, leaky_client) -> None:
    # SIGPIPE at its default: `yes` dies of it silently instead of writing "Broken pipe".
    result = master.run("n1", "yes | head -1").results["n1"]
    assert (result.exit_code, result.stdout, result.stderr) == (0, b"y\n", b"")
    masks = master.run("n1", "grep -E '^Sig(Ign|Blk)' /proc/self/status").results["n1"]
    fields = masks.stdout.decode().split()
    assert fields[0::2] == ["SigBlk:", "SigIgn:"]
    assert int(fields[1], 16) == 0 and int(fields[3], 16) & ~GLIBC_INTERNAL == 0
