"""What a ``run`` command writes reaches the master: stdout and stderr apart, both in the
command's log in the order written, at most OUTPUT_CAP bytes a stream (the rest counted),
and a background job that keeps a pipe open does not hold the answer up."""

from __future__ import annotations

import signal

import psutil

from client.shell import OUTPUT_CAP
from master.api import MasterAPI
from tests.harness import wait_until


def test_stdout_and_stderr_come_back_apart_and_both_land_in_the_log(
        master: MasterAPI, ready_client) -> None:
    ready_client("n1")
    group = master.run("n1", "echo out-1; echo err-1 >&2; echo out-2; exit 3", timeout=30)
    answer = group.results["n1"]
    assert (answer.exit_code, answer.stdout, answer.stderr, answer.dropped) == (
        3, b"out-1\nout-2\n", b"err-1\n", 0)
    chunk = master.log(f"n1:{answer.pid}")
    assert sorted(chunk.data.splitlines()) == [b"err-1", b"out-1", b"out-2"]


def test_output_beyond_the_cap_is_counted_not_kept(master: MasterAPI, ready_client) -> None:
    ready_client("n1")
    over = 1000
    group = master.run("n1", f"head -c {OUTPUT_CAP + over} /dev/zero; "
                             f"head -c {OUTPUT_CAP + 2 * over} /dev/zero >&2", timeout=30)
    answer = group.results["n1"]
    assert answer.exit_code == 0
    assert (len(answer.stdout), len(answer.stderr)) == (OUTPUT_CAP, OUTPUT_CAP)
    assert answer.dropped == 3 * over


def test_a_background_job_holding_the_pipe_does_not_hold_the_answer(
        master: MasterAPI, ready_client) -> None:
    ready_client("n1")
    group = master.run("n1", "sleep 30.25 & echo started", timeout=60)
    answer = group.results["n1"]
    assert (answer.exit_code, answer.stdout) == (0, b"started\n")
    assert sleeps(), "answered only once the background job had ended"
    master.signal([f"n1:{answer.pid}"], signal.SIGKILL)  # to the shell's group: the sleep
    wait_until(lambda: not sleeps(), what="the background sleep killed")


def sleeps() -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        if (process.info["cmdline"] == ["sleep", "30.25"]
                and process.info["status"] != psutil.STATUS_ZOMBIE):
            found.append(process)
    return found
