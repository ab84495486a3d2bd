"""Process exits reported by the clients: drop repeats, tell the operator, wake waiters.

Lives on the hub thread. A client resends an exit event until it is acknowledged, so after
a reconnect the same event may come twice; ``(boot, eseq)`` recognises the repeat.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import gevent.event

from common.procs import ProcExited
from master.events import ProcessEvent
from master.registry import Node, NodeRegistry

log = logging.getLogger("corral.master.procs")


class ExitTracker:
    def __init__(self, registry: NodeRegistry) -> None:
        self._registry = registry
        self._last_seen: dict[tuple[str, str], int] = {}  # (node id, client boot) -> eseq
        self._waiters: dict[tuple[str, int], list[gevent.event.AsyncResult]] = (
            defaultdict(list)
        )

    def on_exit(self, node: Node, event: ProcExited) -> None:
        key = (node.node_id, event.boot)
        if event.eseq <= self._last_seen.get(key, 0):
            return  # delivered before the connection dropped; the ack was lost
        self._last_seen[key] = event.eseq
        for info in event.procs:
            for waiter in self._waiters.pop((node.name, info.pid), []):
                waiter.set(info)
            self._registry.publish(ProcessEvent(node.name, info))

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
