"""Stopped processes are seen as stopped; kill says what it did not reach; a group outlives
its leader and stays reachable. Real master and client, both spawn methods."""

from __future__ import annotations

import io
import os
import signal

import psutil
import pytest

from master.api import MasterAPI
from master.console import CorralConsole
from master.events import Event, ProcessEvent
from tests.harness import wait_until


@pytest.fixture
def notices(master: MasterAPI) -> list[str]:
    seen: list[str] = []

    def record(event: Event) -> None:
        if isinstance(event, ProcessEvent):
            seen.append(event.describe())

    master.subscribe(record)
    return seen


@pytest.fixture
def node(ready_client):  # type: ignore[no-untyped-def]
    return ready_client("n1")


@pytest.fixture
def console(master: MasterAPI) -> CorralConsole:
    return CorralConsole(master, interactive=False, stdout=io.StringIO())


def start(master: MasterAPI, argv: list[str]) -> str:
    (info,) = master.exec("n1", argv).results["n1"]
    return f"n1:{info.pid}"


def state_of(master: MasterAPI, ref: str) -> str:
    pid = int(ref.split(":")[1])
    return next(p.describe() for p in master.processes("n1").results["n1"] if p.pid == pid)


def results(console: CorralConsole, command: str) -> list[tuple[bool, str, int]]:
    console.onecmd_plus_hooks(command)
    return [(o.ok, o.message, o.still_running) for o in console.last_result]


def sleeps_started(leader: int) -> bool:
    """Both sleeps have been exec'd (so the background one ignores SIGINT by now)."""
    names = []
    for pid in group_members(leader):
        try:
            names.append(psutil.Process(pid).name())
        except psutil.Error:
            continue
    return names.count("sleep") == 2


def group_members(leader: int) -> list[int]:
    members = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == leader and process.status() != psutil.STATUS_ZOMBIE:
                members.append(process.pid)
        except (OSError, psutil.Error):
            continue
    return members


@pytest.mark.slow
def test_stop_and_continue(master: MasterAPI, node, console: CorralConsole,
                           notices: list[str]) -> None:
    ref = start(master, ["sleep", "60"])
    assert results(console, f"kill -s STOP {ref}") == [(True, "stopped (SIGSTOP)", 0)]
    assert state_of(master, ref) == "stopped (SIGSTOP)"
    wait_until(lambda: f"process {ref} (sleep 60) stopped (SIGSTOP)" in notices,
               what="stop notice")
    assert psutil.Process(int(ref.split(":")[1])).status() == psutil.STATUS_STOPPED
    assert results(console, f"kill -s CONT {ref}") == [(True, "continued, running", 0)]
    assert state_of(master, ref) == "running"
    wait_until(lambda: f"process {ref} (sleep 60) continued" in notices, what="continue notice")
    # A stop report is not an end: wait still waits, and sees the real end.
    assert not master.wait([ref], timeout=0.2)[0].ok
    # The kernel drops the terminal's stop signals for a group no shell controls (an
    # orphaned group, as every group corral starts is): only SIGSTOP stops it.
    assert results(console, f"kill -s TSTP {ref}") == [(True, "sent SIGTSTP; still running", 0)]
    console.onecmd_plus_hooks(f"kill -s STOP {ref}")
    assert state_of(master, ref) == "stopped (SIGSTOP)"
    # A terminating signal reaches a stopped process too (followed by SIGCONT, as a shell
    # does for a stopped job).
    assert results(console, f"kill {ref}") == [(True, "killed SIGINT", 0)]
    assert [r.info.describe() for r in master.wait([ref], timeout=30)] == ["killed SIGINT"]
    wait_until(lambda: f"process {ref} (sleep 60) killed SIGINT" in notices, what="end notice")


def test_a_process_that_stops_itself_then_exits(master: MasterAPI, node,
                                                console: CorralConsole) -> None:
    ref = start(master, ["sh", "-c", "kill -STOP $$; exit 3"])
    wait_until(lambda: state_of(master, ref) == "stopped (SIGSTOP)", what="stopped")
    console.onecmd_plus_hooks(f"kill -s CONT {ref}")
    assert [r.info.describe() for r in master.wait([ref], timeout=30)] == ["exited 3"]


@pytest.mark.slow
def test_kill_reports_the_group_left_behind(master: MasterAPI, node,
                                            console: CorralConsole) -> None:
    # A non-interactive shell starts its background job with SIGINT ignored.
    ref = start(master, ["sh", "-c", "sleep 100 & sleep 200"])
    leader = int(ref.split(":")[1])
    wait_until(lambda: sleeps_started(leader), what="both sleeps started")
    [(ok, message, left)] = results(console, f"kill {ref}")
    assert ok and message == "killed SIGINT" and left == 1
    assert (f"{ref}  killed SIGINT; 1 process of its group still runs (sKill to end it)"
            in console.stdout.getvalue())  # type: ignore[attr-defined]
    (orphan,) = group_members(leader)
    # The leader has ended; its group has not, and is still reachable.
    assert results(console, f"kill {ref}") == [
        (True, "sent SIGINT to its group (the process itself had killed SIGINT)", 1)]
    assert results(console, f"sKill {ref}") == [
        (True, "sent SIGKILL to its group (the process itself had killed SIGINT)", 0)]
    wait_until(lambda: not psutil.pid_exists(orphan) or
               psutil.Process(orphan).status() == psutil.STATUS_ZOMBIE, what="orphan gone")
    [(ok, message, _left)] = results(console, f"sKill {ref}")
    assert not ok and message.endswith("already ended (killed SIGINT), and so has its "
                                       "process group")


def test_skill_all_ends_leftover_groups(master: MasterAPI, node) -> None:
    ref = start(master, ["sh", "-c", "sleep 100 & exec sleep 200"])
    leader = int(ref.split(":")[1])
    wait_until(lambda: sleeps_started(leader), what="both sleeps started")
    (outcome,) = master.signal([ref], signal.SIGINT)
    assert outcome.still_running == 1
    group = master.signal_all("n1", signal.SIGKILL)
    assert [(o.ref, o.still_running) for o in group.results["n1"]] == [(ref, 0)]
    wait_until(lambda: not group_members(leader), what="the whole group ended")
    assert master.signal_all("n1", signal.SIGKILL).results["n1"] == []
