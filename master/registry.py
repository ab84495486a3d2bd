"""The live node list: who is connected, in which state, and what their heartbeats say.

Lives on the hub thread. Every state change goes through ``change_state``, which checks the
transition table and publishes one event; readers get frozen ``NodeView`` snapshots.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gevent.event

from common.errors import CorralError, ErrorCode
from common.messages import Register
from common.states import NODE_TRANSITIONS, REACHABLE_STATES, NodeState
from common.text import printable
from master.events import Event, NodeEvent
from master.front.results import NodeView, natural_key
from master.known_nodes import KnownNode

if TYPE_CHECKING:
    from master.session import Session

log = logging.getLogger("corral.master.nodes")

MISSING_AFTER = 3  # heartbeat intervals without a heartbeat
GONE_AFTER = 10
STALL_AFTER = 1  # intervals a liveness check may come late before the master counts it stalled
MAX_GONE = 10_000  # departed nodes remembered (oldest forgotten first)
_READY = NodeState.READY
_REVIVED_BY_HEARTBEAT = (NodeState.CONNECTING, NodeState.MISSING)


class DuplicateName(CorralError):
    code = ErrorCode.DUPLICATE_NAME


@dataclasses.dataclass
class Node:
    node_id: str
    name: str
    host: str
    address: str
    state: NodeState = NodeState.CONNECTING
    session: Session | None = None
    last_heartbeat: float | None = None  # monotonic
    # The last heartbeat as it came off the wire, checked (``heartbeat_is_well_formed``):
    # kept as it is, read only when someone asks for a view.
    figures: dict[str, Any] | None = None
    rtt_ms: float | None = None
    gone_at: float = 0.0  # monotonic time it last went GONE
    seen_at: float = 0.0  # wall-clock time it was last known connected
    data_address: tuple[str, int] | None = None  # where other nodes reach its data port

    def view(self, now: float) -> NodeView:
        hb = self.figures
        since = None if self.last_heartbeat is None else max(0.0, now - self.last_heartbeat)
        return NodeView(
            name=self.name,
            node_id=self.node_id,
            host=self.host,
            address=self.address,
            state=self.state,
            since_heartbeat=since,
            rtt_ms=self.rtt_ms,
            load=None if hb is None else (hb["load"][0], hb["load"][1], hb["load"][2]),
            cpu_percent=None if hb is None else hb["cpu_percent"],
            mem_available=None if hb is None else hb["mem_available"],
            mem_total=None if hb is None else hb["mem_total"],
            disk_free=None if hb is None else hb["disk_free"],
            processes=None if hb is None else hb["processes"],
            seen_at=self.seen_at if self.state is NodeState.GONE and self.seen_at else None,
        )


Listener = Callable[[Event], Any]


class NodeRegistry:
    def __init__(self, heartbeat_interval: float) -> None:
        self.heartbeat_interval = heartbeat_interval
        self._by_id: dict[str, Node] = {}
        self._listeners: list[Listener] = []
        self._changed = gevent.event.Event()
        self._last_check: float | None = None  # monotonic time of the last liveness check

    # --- events ---------------------------------------------------------------------------

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def publish(self, event: Event) -> None:
        if log.isEnabledFor(logging.INFO):  # (described only to be logged)
            log.info("%s", event.describe())
        for listener in list(self._listeners):
            listener(event)
        changed, self._changed = self._changed, gevent.event.Event()
        changed.set()

    def wait_for_change(self, timeout: float | None) -> None:
        self._changed.wait(timeout)

    # --- membership -----------------------------------------------------------------------

    def admit(self, hello: Register, session: Session) -> Node:
        """Bind an authenticated session to its node entry, creating it on first sight."""
        for other in self._by_id.values():
            if (
                other.name == hello.name
                and other.node_id != hello.node_id
                and other.state in REACHABLE_STATES
            ):
                raise DuplicateName(
                    f"name {hello.name!r} is already used by node {other.node_id[:8]} "
                    f"connected from {other.address}"
                )
        # A GONE entry under the same name but another id is a machine that was rebuilt.
        stale = [
            n.node_id
            for n in self._by_id.values()
            if n.name == hello.name and n.node_id != hello.node_id
        ]
        for node_id in stale:
            del self._by_id[node_id]
        self._limit_gone()

        node = self._by_id.get(hello.node_id)
        if node is not None and node.session is not None and node.session is not session:
            # The same client reconnected before its old socket was noticed dead.
            old_session = node.session
            node.session = None
            old_session.close("replaced by a new connection from the same node")
            if node.state is not NodeState.GONE:
                self.change_state(node, NodeState.GONE, "reconnected")
        if node is None:
            node = Node(hello.node_id, hello.name, hello.host, session.address)
            self._by_id[node.node_id] = node
            node.session = session
            self.publish(NodeEvent(node.name, None, NodeState.CONNECTING, session.address))
        else:
            node.name, node.host, node.address = hello.name, hello.host, session.address
            node.session = session
            node.figures = None
            node.last_heartbeat = None
            self.change_state(node, NodeState.CONNECTING, f"from {session.address}")
        return node

    def _limit_gone(self) -> None:
        """Keep at most MAX_GONE departed nodes: a peer holding the token could otherwise
        register under ever new ids and names until the master runs out of memory."""
        gone = [n for n in self._by_id.values() if n.state is NodeState.GONE]
        if len(gone) >= MAX_GONE:
            gone.sort(key=lambda n: n.gone_at)
            for node in gone[: len(gone) - MAX_GONE + 1]:
                del self._by_id[node.node_id]

    def disconnected(self, node: Node, session: Session, reason: str) -> None:
        if node.session is not session:
            return  # a newer session already took this node over
        node.session = None
        if node.state is not NodeState.GONE:
            self.change_state(node, NodeState.GONE, reason)

    def restore(self, known: list[KnownNode]) -> None:
        """Expect the nodes a previous run of this master had seen: GONE until they are back."""
        for entry in known:
            if entry.node_id not in self._by_id:
                self._by_id[entry.node_id] = Node(entry.node_id, entry.name, entry.host, "-",
                                                  state=NodeState.GONE, seen_at=entry.seen)

    def known(self) -> list[KnownNode]:
        now = time.time()
        return [KnownNode(n.node_id, n.name, n.host,
                          n.seen_at if n.state is NodeState.GONE else now)
                for n in self._by_id.values()]

    def forget_node(self, name: str) -> None:
        """Remove a GONE node from the list (and so from the nodes expected back)."""
        matches = [n for n in self._by_id.values() if n.name == name]
        if not matches:
            raise CorralError(f"no node named {name!r}", ErrorCode.NOT_FOUND)
        for node in matches:
            if node.state is not NodeState.GONE:
                raise CorralError(f"{name} is {node.state}; only a GONE node can be "
                                  "forgotten", ErrorCode.BAD_REQUEST)
        for node in matches:
            del self._by_id[node.node_id]
        self.publish(NodeEvent(name, NodeState.GONE, None, "forgotten"))

    # --- liveness -------------------------------------------------------------------------

    def heartbeat(self, node: Node, figures: dict[str, Any]) -> None:
        """A heartbeat's map (``Heartbeat.to_wire()``, or a frame's map that
        ``heartbeat_is_well_formed`` accepted): stored as it is, no object made from it,
        since 10,000 nodes send 10,000 a second and a view of them is asked for seldom."""
        node.figures = figures
        node.last_heartbeat = time.monotonic()
        if node.state is not _READY and node.state in _REVIVED_BY_HEARTBEAT:
            self.change_state(node, NodeState.READY)

    def check_liveness(self, now: float) -> None:
        """Judge each node on how long it has been silent. Called every half interval;
        if the master's own loop stalled meanwhile (stopped, swapped out, busy), heartbeats
        waiting unread in its sockets are no fault of the nodes: the stalled time is not
        counted against any of them."""
        interval = self.heartbeat_interval
        stalled = 0.0 if self._last_check is None else now - self._last_check - interval / 2
        self._last_check = now
        if stalled >= STALL_AFTER * interval:
            log.warning("the master's own loop stalled for %.1f s; no node is blamed for "
                        "that time", stalled)
            for node in self._by_id.values():
                if node.last_heartbeat is not None:
                    node.last_heartbeat += stalled
        # Every node, twice a second: the silent few are picked out in one comprehension
        # (at 10,000 nodes the loop below over all of them was 5 % of the master's CPU).
        quiet_since = now - MISSING_AFTER * interval
        late = [node for node in self._by_id.values()
                if node.last_heartbeat is not None and node.last_heartbeat <= quiet_since]
        for node in late:
            if node.state not in (NodeState.READY, NodeState.MISSING):
                continue
            assert node.last_heartbeat is not None
            silent = now - node.last_heartbeat
            if silent >= GONE_AFTER * interval:
                reason = f"no heartbeat for {silent:.1f} s"
                session = node.session
                node.session = None
                self.change_state(node, NodeState.GONE, reason)
                if session is not None:
                    session.close(reason, silent=True)
            elif silent >= MISSING_AFTER * interval and node.state is NodeState.READY:
                self.change_state(node, NodeState.MISSING, f"no heartbeat for {silent:.1f} s")

    def change_state(self, node: Node, new: NodeState, detail: str = "") -> None:
        old = node.state
        if new not in NODE_TRANSITIONS[old]:
            raise AssertionError(f"node {node.name}: illegal transition {old} -> {new}")
        node.state = new
        if new is NodeState.GONE:
            node.gone_at = time.monotonic()
            node.seen_at = time.time()
        self.publish(NodeEvent(node.name, old, new, detail))

    # --- queries --------------------------------------------------------------------------

    def nodes(self) -> list[Node]:
        return sorted(self._by_id.values(), key=lambda n: natural_key(n.name))

    def views(self) -> list[NodeView]:
        now = time.monotonic()
        return [node.view(now) for node in self.nodes()]

    def by_name(self, name: str) -> Node:
        for node in self._by_id.values():
            if node.name == name:
                return node
        raise CorralError(f"unknown node: {printable(name)}", ErrorCode.UNKNOWN_NODE)

    def size(self) -> int:
        return len(self._by_id)

    def knows(self, node_id: str) -> bool:
        return node_id in self._by_id

    def count(self, state: NodeState) -> int:
        return sum(1 for node in self._by_id.values() if node.state is state)
