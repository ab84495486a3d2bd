"""Process-end notices above the prompt: bursts summarised per node, failures shown one by
one, ``set notices`` chooses, in a real terminal."""

from __future__ import annotations

import re

import pexpect
import pytest

from common.procs import ProcInfo
from master.events import ProcessEvent
from master.notices import Notices
from tests.harness import MasterProcess
from tests.test_master_process import spawn_console


def ended(node: str, pid: int, code: int, origin: str = "exec") -> ProcessEvent:
    return ProcessEvent(node, ProcInfo(seq=pid, pid=pid, argv=["true"], cwd="/", log="",
                                       state="exited", started=0.0, ended=1.0,
                                       exit_code=code, origin=origin))


def test_burst_rules_with_a_given_clock() -> None:
    notices = Notices(window=1.0)
    assert notices.offer(ended("n2", 7, 1), now=0.0) == ["process n2:7 (true) exited 1"]
    for pid in range(100, 2100):
        assert notices.offer(ended("n2", pid, 0), now=0.5) == []
    assert notices.offer(ended("n10", 5, 0), now=0.6) == []
    assert notices.offer(ended("n1", 9, 0, origin="run"), now=0.6) == []
    assert notices.due(0.6) == pytest.approx(0.9)
    assert notices.flush() == ["n2: 2,000 processes exited 0 in the last second",
                               "process n10:5 (true) exited 0"]
    assert notices.due(2.0) is None
    notices.level = "failures"
    assert notices.offer(ended("n2", 3, 0), now=3.0) == [] and notices.due(3.0) is None
    notices.level = "off"
    assert notices.offer(ended("n2", 4, 2), now=3.0) == []


@pytest.mark.slow
def test_notices_in_the_terminal(tmp_path, token_file, spawn_client) -> None:
    child = spawn_console(MasterProcess(tmp_path, token_file, 0).argv([]))
    try:
        spawn_client("n1", ("127.0.0.1", int(child.match.group(1))))
        child.expect(r"node n1: CONNECTING -> READY")
        child.sendline("exec -n 300 -- true")
        total = lines = 0
        while total < 300:  # one line, or a few if the burst straddled a second
            child.expect(r"n1: ([\d,]+) processes exited 0 in the last second|"
                         r"process n1:\d+ \(true\) exited 0")
            total += int(child.match.group(1).replace(",", "")) if child.match.group(1) else 1
            lines += 1
        assert total == 300 and lines <= 5
        child.sendline("exec -n 3 -- sh -c 'exit 3'")
        for _ in range(3):
            child.expect(r"process n1:\d+ \(sh -c exit 3\) exited 3")
        child.sendline("set notices failures")
        child.sendline("exec -- sh -c 'exit 4'")
        child.expect(r"(n1:\d+)\s+sh -c")
        child.expect(r"process n1:\d+ \(sh -c exit 4\) exited 4")
        child.sendline("set notices off")
        child.sendline("exec -- sh -c 'exit 5'")
        child.expect(r"(n1:\d+)\s+sh -c")
        ref = child.match.group(1)
        child.sendline(f"wait {ref}")
        child.expect(rf"{ref}\s+exited 5")
        child.sendline("list")
        child.expect(r"n1\s+\w{8}\s+127")
        assert not re.search(r"\) exited 5", child.before)
        child.sendline("quit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)


def test_a_burst_of_failures_shows_some_and_counts_the_rest() -> None:
    from master.notices import FAILURES_SHOWN

    notices = Notices(window=1.0)
    shown = [line for pid in range(1, 5001) for line in notices.offer(ended("n2", pid, 1), 0.0)]
    assert len(shown) == FAILURES_SHOWN
    assert notices.offer(ended("n1", 9, 2), 0.1) == ["process n1:9 (true) exited 2"]
    assert notices.due(0.1) == pytest.approx(0.9)
    assert notices.flush() == [f"n2: {5000 - FAILURES_SHOWN:,} more processes failed in the "
                               "last second (pid --state failed lists them)"]
    # A new window shows failures again.
    assert notices.offer(ended("n2", 9999, 1), 2.0) == ["process n2:9999 (true) exited 1"]
