"""Variables and barriers in the engine, without processes: the rules a user relies on,
checked in milliseconds (the process tests check the same through the CLI)."""

from __future__ import annotations

from pathlib import Path

import gevent
import pytest

from common.errors import CorralError, ErrorCode
from common.states import NodeState
from master.barriers import Barriers
from master.caller import OPERATOR, Caller
from master.events import NodeEvent
from master.variables import VariableStore


def test_cas_set_del_and_reload(tmp_path: Path) -> None:
    store = VariableStore(tmp_path)
    assert store.cas("lock", None, "a", "n1:1").swapped
    refused = store.cas("lock", None, "b", "n2:2")
    assert not refused.swapped and refused.current is not None
    assert refused.current.value == "a" and refused.current.set_by == "n1:1"
    assert store.cas("lock", "a", "b", "n2:2").current.version == 2  # type: ignore[union-attr]
    assert store.delete("lock") and not store.delete("lock")
    store.set("kept", "x", "operator")
    assert [e.name for e in VariableStore(tmp_path).list()] == ["kept"]


def test_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = VariableStore(tmp_path)
    monkeypatch.setattr("master.variables.MAX_VARIABLES", 2)
    store.set("a", "1", "operator")
    store.set("b", "1", "operator")
    with pytest.raises(CorralError, match="the store is full: 2 variables"):
        store.set("c", "1", "operator")
    store.set("a", "2", "operator")  # replacing is not adding
    monkeypatch.setattr("master.variables.MAX_TOTAL_BYTES", 10)
    with pytest.raises(CorralError, match="may hold 0 MiB together"):
        store.set("a", "a longer value", "operator")
    for name in ("", "-a", "a b", "é", "x" * 129):
        with pytest.raises(CorralError) as bad:
            store.get(name)
        assert bad.value.code is ErrorCode.BAD_REQUEST


def test_barrier_generations_and_mismatch() -> None:
    barriers = Barriers()
    waiter = gevent.spawn(barriers.arrive, "b", 2, None, Caller("n1:5", "n1"))
    gevent.sleep(0)
    with pytest.raises(CorralError, match="waits for 2 participants, not 3"):
        barriers.arrive("b", 3, None, OPERATOR)
    assert barriers.arrive("b", 2, None, OPERATOR).generation == 1
    assert waiter.get().participants == ["n1:5", "operator"]
    assert barriers.arrive("b", 1, None, OPERATOR).generation == 2
    assert barriers.views() == []


def test_barrier_fails_when_a_participants_node_goes() -> None:
    barriers = Barriers()
    waiters = [gevent.spawn(barriers.arrive, "b", 3, None, Caller(f"{n}:1", n))
               for n in ("n1", "n2")]
    gevent.sleep(0)
    barriers.node_changed(NodeEvent("n3", NodeState.READY, NodeState.GONE))  # not one
    barriers.node_changed(NodeEvent("n2", NodeState.READY, NodeState.MISSING))
    assert len(barriers.views()[0].participants) == 2
    barriers.node_changed(NodeEvent("n2", NodeState.MISSING, NodeState.GONE))
    for waiter in waiters:
        with pytest.raises(CorralError, match="node n2 went GONE while n2:1 waited"):
            waiter.get()
    assert barriers.views() == []


def test_a_killed_participant_leaves() -> None:
    barriers = Barriers()
    waiter = gevent.spawn(barriers.arrive, "b", 2, None, OPERATOR)
    gevent.sleep(0)
    waiter.kill()
    assert barriers.views() == []
