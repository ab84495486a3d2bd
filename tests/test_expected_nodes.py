"""The master remembers the nodes it has seen: after a restart the ones not back yet are
listed as GONE with when they were last seen, until they return or are forgotten. Refused
attempts reach the console once per source and reason, then as a count."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from common.errors import CorralError
from master.api import MasterAPI
from master.events import Event, NodeEvent
from master.refusals import Refusals
from tests.harness import PATIENCE, wait_until


@pytest.mark.slow
def test_a_restarted_master_lists_the_nodes_not_back_yet(spawn_master, spawn_client) -> None:
    first = spawn_master(["list --wait 2 --timeout 30"], extra=["--heartbeat", "0.2"])
    spawn_client("n1", first.address)
    n2 = spawn_client("n2", first.address)
    wait_until(lambda: "n1: CONNECTING -> READY" in first.log_text()
               and "n2: CONNECTING -> READY" in first.log_text(), what="both READY")
    n2.stop()
    wait_until(lambda: "n2: READY -> GONE" in first.log_text(), what="n2 gone")
    known = first.base / "master-state" / "nodes.json"  # saved within half an interval
    wait_until(lambda: known.exists() and '"n2"' in known.read_text(), what="n2 saved")
    assert first.proc is not None
    first.proc.send_signal(signal.SIGKILL)  # no orderly save: what it saved as it went
    first.proc.wait()
    again = spawn_master(["list --wait 1 --timeout 30", "forget n1", "forget n2", "list",
                          "quit"], port=first.port, extra=["--heartbeat", "0.2"])
    assert again.proc is not None
    out, err = again.proc.communicate(timeout=PATIENCE * 2)
    before, _, after = out.partition("n2  forgotten")
    assert "n2" in before and "GONE (not seen since 20" in before, out
    assert "n1 is READY; only a GONE node can be forgotten" in err
    assert again.proc.returncode == 1  # forget n1 failed
    assert "n1" in after and "n2" not in after, out


def test_forget_of_an_unknown_node_is_a_clear_error(master: MasterAPI) -> None:
    with pytest.raises(CorralError, match="no node named 'n9'"):
        master.forget_node("n9")


def test_wrong_token_retries_make_one_notice(master: MasterAPI, spawn_client, tmp_path: Path,
                                             master_log: Path) -> None:
    events: list[Event] = []
    master.subscribe(events.append)
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not the token\n")
    wrong.chmod(0o600)
    spawn_client("intruder", master.address, token=wrong)
    wait_until(lambda: master_log.read_text().count("wrong token") >= 4, what="4 attempts")
    notices = [e.describe() for e in events if isinstance(e, NodeEvent) and e.new is None]
    assert notices == ["node intruder refused: authentication failed for 'intruder': wrong "
                       "token (from 127.0.0.1)"], notices


def test_repeated_refusals_are_counted() -> None:
    told: list[str] = []
    refusals = Refusals(lambda event: told.append(event.describe()), every=60)
    for second in range(5):
        refusals.note("10.0.0.7", "ch1", "name 'ch1' is already used", now=float(second))
    refusals.note("10.0.0.8", "ch1", "name 'ch1' is already used", now=5.0)
    refusals.flush(now=30.0)
    assert len(told) == 2  # one per source, nothing counted yet
    refusals.flush(now=61.0)
    assert told[2] == ("node ch1 refused: name 'ch1' is already used (from 10.0.0.7; 4 more "
                       "attempts in the last 61 s, 5 in all)")
    refusals.flush(now=200.0)
    assert len(told) == 3  # nothing new, nothing said
