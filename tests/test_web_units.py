"""The dashboard's rules without a network: the feed's coalescing (a node's figures at most
once a second, a whole fleet's changes in one message, a slow page resynchronised), the
session rules (token, CSRF, expiry, rotation, guessing), and the --http argument."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from typing import Any

import pytest

from common.argtypes import http_address
from common.messages import Heartbeat, Register
from common.procs import ProcInfo
from common.states import NodeState
from master.events import Event, NodeEvent, ProcessesStarted, ProcessEvent
from master.front import codec
from master.notices import Notices
from master.registry import Node, NodeRegistry
from master.web import feed as feed_module
from master.web.feed import RESYNC, Feed, Subscriber
from master.web.sessions import FAILURES_ALLOWED, IDLE_LIMIT, WebSessions


class FakeSession:
    def __init__(self, name: str) -> None:
        self.address = f"10.0.0.1:{1000 + len(name)}"

    def close(self, reason: str, silent: bool = False) -> None:
        pass


def admit(registry: NodeRegistry, name: str) -> Node:
    hello = Register(version=1, node_id=f"id-{name}", name=name, host="h", nonce=b"n",
                     mac=b"m")
    return registry.admit(hello, FakeSession(name))  # type: ignore[arg-type]


def beat(registry: NodeRegistry, node: Node, seq: int = 1) -> None:
    registry.heartbeat(node, Heartbeat(seq=seq, load=[0.5, 0.4, 0.3], cpu_percent=2.0,
                                       mem_available=1 << 30, mem_total=1 << 31,
                                       disk_free=1 << 32, processes=seq).to_wire())


def messages(subscriber: Subscriber) -> list[Any]:
    """Every queued message, as (kind, data) pairs."""
    found = []
    while not subscriber.queue.empty():
        item = subscriber.queue.get_nowait()
        if item == RESYNC:
            found.append(("resync", None))
            continue
        assert isinstance(item, bytes)
        for block in item.decode().strip().split("\n\n"):
            kind, data = block.split("\n")
            found.append((kind.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return found


@pytest.fixture
def fleet() -> Iterator[tuple[NodeRegistry, Feed, Subscriber]]:
    registry = NodeRegistry(1.0)
    feed = Feed(registry)
    subscriber = feed.subscribe()
    try:
        yield registry, feed, subscriber
    finally:
        feed.unsubscribe(subscriber)


def test_joins_and_state_changes_go_out_at_the_next_tick(fleet: Any) -> None:
    registry, feed, subscriber = fleet
    n1, n2 = admit(registry, "n1"), admit(registry, "n2")
    feed.flush(100.0, scan_figures=False)
    (kind, rows), (notes_kind, notes) = messages(subscriber)
    assert kind == "nodes" and [(r["name"], r["state"]) for r in rows["rows"]] == [
        ("n1", "CONNECTING"), ("n2", "CONNECTING")]
    assert notes_kind == "notes" and notes["lines"][0].startswith("node n1 joined")
    beat(registry, n1)
    beat(registry, n2)
    feed.flush(100.25, scan_figures=False)
    kind, rows = messages(subscriber)[0]
    assert [(r["name"], r["state"], r["procs"]) for r in rows["rows"]] == [
        ("n1", "READY", 1), ("n2", "READY", 1)]


def test_figures_at_most_once_a_second_per_node(fleet: Any) -> None:
    registry, feed, subscriber = fleet
    node = admit(registry, "n1")
    beat(registry, node)
    feed.flush(100.0, scan_figures=True)
    assert len(messages(subscriber)[0][1]["rows"]) == 1
    beat(registry, node, seq=2)
    feed.flush(100.5, scan_figures=True)  # new figures, but sent half a second ago
    assert messages(subscriber) == []
    feed.flush(101.0, scan_figures=True)
    (kind, rows), = messages(subscriber)
    assert kind == "nodes" and rows["rows"][0]["procs"] == 2
    feed.flush(102.5, scan_figures=True)  # nothing new: nothing sent
    assert messages(subscriber) == []


def test_a_fleet_changes_in_one_message(fleet: Any) -> None:
    registry, feed, subscriber = fleet
    nodes = [admit(registry, f"n{i}") for i in range(1, 1001)]
    feed.flush(100.0, scan_figures=False)
    messages(subscriber)
    for node in nodes:
        beat(registry, node)
    feed.flush(101.0, scan_figures=True)
    found = messages(subscriber)
    assert [kind for kind, _data in found] == ["nodes", "notes"]
    assert len(found[0][1]["rows"]) == 1000
    assert found[0][1]["rows"][9]["name"] == "n10"  # in node order
    assert len(found[1][1]["lines"]) == feed_module.NOTES_PER_TICK
    assert found[1][1]["more"] == 1000 - feed_module.NOTES_PER_TICK


def test_a_slow_page_is_resynchronised(fleet: Any) -> None:
    registry, feed, subscriber = fleet
    node = admit(registry, "n1")
    for second in range(feed_module.QUEUE + 5):
        beat(registry, node, seq=second + 1)
        feed.flush(100.0 + second, scan_figures=True)
    assert messages(subscriber) == [("resync", None)]
    assert "n1" in feed.snapshot().decode()


def test_forgotten_nodes_leave_the_page(fleet: Any) -> None:
    registry, feed, subscriber = fleet
    node = admit(registry, "n1")
    registry.disconnected(node, node.session, "test")
    registry.forget_node("n1")
    feed.flush(100.0, scan_figures=False)
    kind, data = messages(subscriber)[0]
    assert kind == "nodes" and data == {"rows": [], "removed": ["n1"]}


def test_nothing_is_gathered_without_a_page() -> None:
    registry = NodeRegistry(1.0)
    feed = Feed(registry)
    feed.unsubscribe(feed.subscribe())
    admit(registry, "n1")  # heard by nobody: the last page went
    subscriber = feed.subscribe()  # a new page starts from the snapshot, not from this
    try:
        feed.flush(100.0, scan_figures=False)
        assert messages(subscriber) == []
        assert "n1" in feed.snapshot().decode()
    finally:
        feed.unsubscribe(subscriber)


# --- sessions ------------------------------------------------------------------------------

def test_sessions_need_the_token_and_end_with_it() -> None:
    token = [b"first-token"]
    sessions = WebSessions(lambda: token[0])
    assert sessions.login("wrong", "10.0.0.9", 0.0) is None
    session = sessions.login("first-token", "10.0.0.9", 0.0)
    assert session is not None and session.csrf != session.sid
    assert sessions.find(session.sid, 10.0) is session
    assert sessions.csrf_ok(session, session.csrf)
    assert not sessions.csrf_ok(session, None) and not sessions.csrf_ok(session, "x")
    token[0] = b"rotated-token"
    assert sessions.find(session.sid, 20.0) is None  # SIGHUP with a new token: logged out


def test_sessions_expire_when_unused() -> None:
    sessions = WebSessions(lambda: b"t")
    session = sessions.login("t", "a", 0.0)
    assert session is not None
    assert sessions.find(session.sid, IDLE_LIMIT - 1) is session  # use keeps it alive
    assert sessions.find(session.sid, 2 * IDLE_LIMIT - 2) is session
    assert sessions.find(session.sid, 3 * IDLE_LIMIT) is None
    assert sessions.find("", 0.0) is None and sessions.find(None, 0.0) is None


def test_guessing_waits_out_the_window() -> None:
    sessions = WebSessions(lambda: b"t")
    for _ in range(FAILURES_ALLOWED):
        assert sessions.wait_before_login("a", 0.0) == 0
        sessions.login("guess", "a", 0.0)
    assert sessions.wait_before_login("a", 1.0) == pytest.approx(59.0)
    assert sessions.wait_before_login("b", 1.0) == 0  # another address is not held up
    assert sessions.wait_before_login("a", 61.0) == 0


@pytest.mark.parametrize(("text", "expected"), [
    ("8080", ("127.0.0.1", 8080)), (":0", ("127.0.0.1", 0)),
    ("0.0.0.0:80", ("0.0.0.0", 80)), ("[::1]:9000", ("::1", 9000)),
    ("web.example:443", ("web.example", 443))])
def test_http_address(text: str, expected: tuple[str, int]) -> None:
    assert http_address(text) == expected


@pytest.mark.parametrize("text", ["", "host:", "host:port", "1:70000", "-1"])
def test_bad_http_address(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        http_address(text)


def test_process_starts_cross_the_control_socket_and_stay_off_the_console() -> None:
    """An attached console hears every event through the control socket's codec; a start
    must come back as itself (not mistaken for an end), and is no notice."""
    info = ProcInfo(seq=1, pid=42, argv=["sleep", "60"], cwd="/w", log="/w/1.log",
                    state="running", started=1.0)
    for event in (ProcessesStarted("n1", [info]), ProcessEvent("n1", info),
                  NodeEvent("n1", NodeState.READY, NodeState.MISSING, "quiet")):
        assert codec.decode(Event, codec.encode(event)) == event
    assert Notices().offer(ProcessesStarted("n1", [info]), 0.0) == []
    assert ProcessesStarted("n1", [info]).describe() == "n1: started n1:42 (sleep 60)"
