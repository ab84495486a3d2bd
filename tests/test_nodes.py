"""Real client processes against the real master engine: registration and liveness."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from common.messages import Ack, Message, Ping
from common.states import NodeState
from master import server
from master.api import MasterAPI
from master.server import MasterConfig, MasterEngine
from tests.conftest import FAST_HEARTBEAT, TOKEN
from tests.harness import wait_until
from tests.peers import ScriptedNode


def states(master: MasterAPI) -> dict[str, NodeState]:
    return {node.name: node.state for node in master.nodes()}


def test_three_clients_become_ready_with_figures(master: MasterAPI, spawn_client) -> None:
    for name in ("n1", "n2", "n3"):
        spawn_client(name, master.address)
    outcome = master.wait_ready(3, timeout=30)
    assert outcome.reached, outcome
    nodes = {node.name: node for node in outcome.nodes}
    assert sorted(nodes) == ["n1", "n2", "n3"]
    for node in nodes.values():
        assert node.state is NodeState.READY
        assert node.address.startswith("127.0.0.1:")
        assert node.mem_total and node.mem_available and node.mem_available <= node.mem_total
        assert node.load is not None and len(node.load) == 3
        assert node.disk_free and node.disk_free > 0
        assert node.processes == 0
    wait_until(lambda: all(n.rtt_ms is not None for n in master.nodes()), what="RTT figures")


def test_wait_ready_times_out_with_what_it_saw(master: MasterAPI, spawn_client) -> None:
    spawn_client("n1", master.address)
    outcome = master.wait_ready(2, timeout=1.0)
    assert not outcome.reached
    assert outcome.ready <= 1 and outcome.wanted == 2


def test_sigkilled_client_goes_gone(master: MasterAPI, spawn_client) -> None:
    victim = spawn_client("n1", master.address)
    spawn_client("n2", master.address)
    assert master.wait_ready(2, timeout=30).reached
    victim.signal(signal.SIGKILL)
    wait_until(lambda: states(master)["n1"] is NodeState.GONE, what="n1 GONE")
    assert states(master)["n2"] is NodeState.READY


@pytest.mark.slow
def test_stopped_client_goes_missing_then_ready(master: MasterAPI, spawn_client,
                                               master_log) -> None:
    victim = spawn_client("n1", master.address)
    assert master.wait_ready(1, timeout=30).reached
    victim.signal(signal.SIGSTOP)
    wait_until(lambda: states(master)["n1"] is NodeState.MISSING, what="n1 MISSING")
    victim.signal(signal.SIGCONT)
    wait_until(lambda: states(master)["n1"] is NodeState.READY, what="n1 READY again")
    log = master_log.read_text()
    assert "n1: READY -> MISSING (no heartbeat" in log
    assert "n1: MISSING -> READY" in log


@pytest.mark.slow
def test_silent_client_goes_gone_after_ten_intervals(master: MasterAPI, spawn_client) -> None:
    victim = spawn_client("n1", master.address)
    assert master.wait_ready(1, timeout=30).reached
    victim.signal(signal.SIGSTOP)
    wait_until(lambda: states(master)["n1"] is NodeState.GONE, what="n1 GONE")
    victim.signal(signal.SIGCONT)
    # It finds its socket closed, reconnects, and is READY again under the same id.
    wait_until(lambda: states(master)["n1"] is NodeState.READY, what="n1 back")
    assert [n.node_id for n in master.nodes()] == [victim.node_id]


def test_duplicate_name_is_refused_naming_the_first(master: MasterAPI, spawn_client,
                                                   master_log) -> None:
    first = spawn_client("n1", master.address)
    assert master.wait_ready(1, timeout=30).reached
    # Another machine (its own state folder, so its own id) claims the same name.
    second = spawn_client("n1", master.address, extra=["--state-dir", str(first.state_dir) + "2"])
    wait_until(lambda: "already used by node" in second.log_text(), what="refusal")
    assert first.node_id[:8] in second.log_text()
    assert "node n1 refused: name 'n1' is already used" in master_log.read_text()
    nodes = master.nodes()
    assert [(n.name, n.node_id, n.state) for n in nodes] == [
        ("n1", first.node_id, NodeState.READY)
    ]


def test_client_restart_keeps_its_id(master: MasterAPI, spawn_client) -> None:
    client = spawn_client("n1", master.address)
    assert master.wait_ready(1, timeout=30).reached
    node_id = client.node_id
    client.signal(signal.SIGKILL)
    wait_until(lambda: states(master)["n1"] is NodeState.GONE, what="GONE")
    client.start()
    wait_until(lambda: states(master)["n1"] is NodeState.READY, what="READY again")
    assert [n.node_id for n in master.nodes()] == [node_id]


@pytest.mark.parametrize(("nodes", "seconds"), [(1, 5.0), (2_500, 5.0), (10_000, 20.0)])
def test_round_trips_are_spaced_out_past_thousands_of_nodes(tmp_path: Path, nodes: int,
                                                            seconds: float) -> None:
    engine = MasterEngine(MasterConfig(heartbeat=1.0, log_dir=tmp_path), TOKEN.encode())
    engine.sessions = set(range(nodes))  # type: ignore[arg-type]  # only counted
    assert engine.rtt_every() == seconds


@pytest.mark.slow
def test_between_spaced_out_pings_a_node_gets_keep_alives(master: MasterAPI,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """With round trips spaced out (here to one every 2 s for a single node), the node
    still hears from the master every 5 intervals (1 s): a keep-alive, an ack of nothing
    that asks no reply, and its RTT is still measured."""
    monkeypatch.setattr(server, "RTT_PINGS_PER_SECOND", 0.5)
    # A client whose kernel cannot say whether the link lives (not Linux).
    node = ScriptedNode(master.address, "k1", TOKEN.encode(), watches_link=False).start()
    try:
        def sent(kind: type[Message]) -> list[Message]:
            return [m for m in list(node.requests) if isinstance(m, kind)]

        wait_until(lambda: len(sent(Ping)) >= 2 and len(sent(Ack)) >= 2, timeout=60,
                   what="two pings and two keep-alives")
        assert all(ack.boot == "" for ack in sent(Ack))  # type: ignore[attr-defined]
        wait_until(lambda: all(n.rtt_ms is not None for n in master.nodes()),
                   what="an RTT figure")
    finally:
        node.stop()


@pytest.mark.slow
def test_a_client_that_watches_the_link_gets_no_keep_alives(master: MasterAPI,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    """A Linux client learns from its kernel whether the master's host acknowledges what it
    sends, and says so at registration: the master then sends it only the spaced-out pings
    (each saying when the next comes), no keep-alives in between."""
    monkeypatch.setattr(server, "RTT_PINGS_PER_SECOND", 0.5)  # one node: a ping every 2 s
    node = ScriptedNode(master.address, "k1", TOKEN.encode()).start()  # says it, on Linux
    try:
        def sent(kind: type[Message]) -> list[Message]:
            return [m for m in list(node.requests) if isinstance(m, kind)]

        wait_until(lambda: len(sent(Ping)) >= 3, timeout=60, what="three pings")
        assert sent(Ack) == []  # no keep-alive between them
        assert all(ping.next_in == pytest.approx(2.0)  # type: ignore[attr-defined]
                   for ping in sent(Ping)[1:])
    finally:
        node.stop()


@pytest.mark.slow
def test_a_real_client_does_not_call_a_master_that_pings_seldom_silent(
        master: MasterAPI, spawn_client, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pings further apart than the 8 intervals after which a client warns that the master
    is busy or stopped (as at thousands of nodes), and no keep-alives between them: the
    client does not warn, because each ping said when the next comes."""
    gap = 10 * FAST_HEARTBEAT
    monkeypatch.setattr(server, "RTT_PINGS_PER_SECOND", 1 / gap)
    client = spawn_client("n1", master.address)
    assert master.wait_ready(1, timeout=30).reached
    figures: set[float] = set()

    def third_round_trip() -> bool:
        if (rtt := master.nodes()[0].rtt_ms) is not None:
            figures.add(rtt)
        return len(figures) >= 3  # two whole gaps between pings have passed

    wait_until(third_round_trip, timeout=60, what="three round trips")
    assert "busy or stopped" not in client.log_text(), client.log_text()
    assert master.nodes()[0].state is NodeState.READY


def test_an_ended_session_is_no_longer_pinged(master: MasterAPI, spawn_client) -> None:
    """A session that ended (its client gone) falls out of the pinger's heap at its next
    turn, whether or not something still holds the session object."""
    victim = spawn_client("n1", master.address)
    assert master.wait_ready(1, timeout=30).reached
    engine, hub = master._engine, master._hub  # the pinger's own heap, read on the hub
    victim.signal(signal.SIGKILL)
    wait_until(lambda: states(master)["n1"] is NodeState.GONE, what="n1 GONE")

    def sessions_due() -> list[object]:
        return [session for _due, _order, ref in engine._pings_due
                if (session := ref()) is not None]

    held = hub.call(sessions_due)  # a session still alive (some cycle holds it) ...
    far = 1e12  # ... is told, even when everything is overdue, that it is over
    assert all(hub.call(session.ping, far, 1.0) is None for session in held)  # type: ignore[attr-defined]
