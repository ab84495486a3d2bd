"""Real client processes against the real master engine: registration and liveness."""

from __future__ import annotations

import signal

import pytest

from common.states import NodeState
from master.api import MasterAPI
from tests.harness import wait_until


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
