"""Process exits (and stops and continues) reported by the clients: drop repeats, tell the
operator, wake those waiting for an end.

Lives on the hub thread. A client resends an exit event until it is acknowledged, so after
a reconnect the same event may come twice; ``(boot, eseq)`` recognises the repeat.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import gevent.event

from common.errors import CorralError, ErrorCode
from common.procs import ProcExited
from common.states import NodeState
from common.text import printable
from master.events import Event, NodeEvent, ProcessEvent
from master.registry import Node, NodeRegistry

log = logging.getLogger("corral.master.procs")


BOOTS_KEPT = 4  # client runs per node whose last event is remembered


class NodeLost(CorralError):
    code = ErrorCode.DISCONNECTED


class ExitTracker:
    def __init__(self, registry: NodeRegistry) -> None:
        self._registry = registry
        # node id -> {client boot -> last eseq}, the newest boots last. A client resends
        # only events of its current run, so a few recent boots are all that can repeat.
        self._last_seen: dict[str, dict[str, int]] = {}
        self._waiters: dict[tuple[str, int], list[gevent.event.AsyncResult]] = (
            defaultdict(list)
        )
        registry.subscribe(self._on_node_event)

    def on_exit(self, node: Node, event: ProcExited) -> None:
        """Publish an exit event, unless it is a repeat (delivered before a reconnect and
        its ack lost)."""
        boots = self._last_seen.get(node.node_id)
        if boots is None:
            self._forget_departed()
            boots = self._last_seen[node.node_id] = {}
        if event.eseq <= boots.get(event.boot, 0):
            return
        boots.pop(event.boot, None)
        boots[event.boot] = event.eseq
        while len(boots) > BOOTS_KEPT:
            del boots[next(iter(boots))]
        for info in event.procs:
            if info.ended_state:  # not a stop or a continue
                for waiter in self._waiters.pop((node.name, info.pid), []):
                    waiter.set(info)
            self._registry.publish(ProcessEvent(node.name, info))

    def _on_node_event(self, event: Event) -> None:
        """Those waiting on a node that goes GONE are told at once: its processes' ends may
        never be reported (the machine may be down), so nobody waits on them for ever."""
        if not isinstance(event, NodeEvent) or event.new is not NodeState.GONE:
            return
        why = f" ({printable(event.detail)})" if event.detail else ""  # the master stopping?
        lost = NodeLost(f"lost: {event.name} went GONE while waiting{why}; its processes may "
                        "still run: wait again once it is back")
        for key in [key for key in self._waiters if key[0] == event.name]:
            for waiter in self._waiters.pop(key):
                waiter.set_exception(lost)

    def _forget_departed(self) -> None:
        """Drop the memory of nodes the registry no longer holds, now and then."""
        if len(self._last_seen) >= 2 * self._registry.size() + 64:
            for node_id in [n for n in self._last_seen if not self._registry.knows(n)]:
                del self._last_seen[node_id]

    def waiter(self, node: str, pid: int) -> gevent.event.AsyncResult:
        """An AsyncResult that gets the ProcInfo when ``node:pid`` is reported ended."""
        result = gevent.event.AsyncResult()
        self._waiters[(node, pid)].append(result)
        return result

    def forget(self, node: str, pid: int, result: gevent.event.AsyncResult) -> None:
        waiting = self._waiters.get((node, pid))
        if waiting and result in waiting:
            waiting.remove(result)
            if not waiting:
                del self._waiters[(node, pid)]
