"""The live feed behind the dashboard's event stream: node rows and process changes,
coalesced, shared by every open page.

Runs on the hub thread. Events from the registry only mark what changed; a ticker a few
times a second turns the marks into one message, encoded once, that every subscriber
queues. A node's figures (a new heartbeat) are sent at most once a second; a join or a
state change goes out at the next tick. So a fleet of 1,000 nodes costs one scan and one
message a second, however many pages are open, and nothing at all when none is.

Each subscriber has a bounded queue: one that does not keep up loses what it had queued
and gets a fresh snapshot instead (the page resynchronises), never slows the hub.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from typing import Any

import gevent
import gevent.queue

from common.procs import ProcInfo
from master.events import Event, NodeEvent, ProcessesStarted, ProcessEvent
from master.front.results import NodeView
from master.registry import NodeRegistry

TICK = 0.25  # seconds between flushes of what changed
FIGURES_EVERY = 1.0  # seconds: at most one update of a node's figures in this time
QUEUE = 64  # messages a subscriber may fall behind by before it is resynchronised
PROCS_PER_NODE = 50  # process changes of one node sent one by one in a tick; the rest counted
NOTES_PER_TICK = 50  # event lines sent per tick; the rest counted

RESYNC = "resync"  # what a subscriber's queue holds after it fell behind


def node_row(view: NodeView) -> dict[str, Any]:
    """A node as the page shows it (short keys: a full fleet is sent at each connect)."""
    return {
        "name": view.name, "id": view.node_id[:8], "host": view.host, "addr": view.address,
        "state": view.state.value, "age": _round(view.since_heartbeat, 1),
        "rtt": _round(view.rtt_ms, 2), "load": None if view.load is None else list(view.load),
        "cpu": _round(view.cpu_percent, 1), "mem": view.mem_available,
        "memTotal": view.mem_total, "disk": view.disk_free, "procs": view.processes,
        "seen": view.seen_at,
    }


def process_row(node: str, info: ProcInfo) -> dict[str, Any]:
    rusage = info.rusage or {}
    cpu = info.cpu_time
    if cpu is None and rusage:
        cpu = rusage["ru_utime"] + rusage["ru_stime"]
        if not math.isfinite(cpu):  # two huge times overflow: JSON has no infinity
            cpu = None
    rss = info.rss
    if rss is None and rusage:
        rss = int(rusage["ru_maxrss"]) * 1024
    return {
        "node": node, "ref": f"{node}:{info.pid}" if info.pid else None, "pid": info.pid,
        "command": " ".join(info.argv), "state": info.state, "status": info.describe(),
        "live": not info.ended_state, "started": info.started, "ended": info.ended,
        "cpu": cpu, "rss": rss, "origin": info.origin,
        "job": f"{info.job}.{info.rank}" if info.job and info.rank is not None else info.job,
    }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def sse(kind: str, data: Any) -> bytes:
    """One server-sent event (``data`` as one line of JSON)."""
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class Subscriber:
    def __init__(self) -> None:
        self.queue: gevent.queue.Queue[bytes | str] = gevent.queue.Queue(QUEUE + 1)
        self.behind = False  # lost messages: its next message is a fresh snapshot

    def offer(self, message: bytes) -> None:
        if self.behind:
            return
        if self.queue.qsize() >= QUEUE:
            while not self.queue.empty():
                self.queue.get_nowait()
            self.behind = True
            self.queue.put_nowait(RESYNC)
        else:
            self.queue.put_nowait(message)


class Feed:
    def __init__(self, registry: NodeRegistry) -> None:
        self.registry = registry
        self.subscribers: set[Subscriber] = set()
        self._ticker: gevent.Greenlet | None = None
        self._changed: set[str] = set()  # nodes joined or changed state: sent next tick
        self._removed: set[str] = set()
        self._procs: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._procs_more: dict[str, int] = defaultdict(int)
        self._notes: list[str] = []
        self._notes_more = 0
        self._sent: dict[str, tuple[float, float | None]] = {}  # node -> (when, its heartbeat)

    # --- subscribers ------------------------------------------------------------------------

    def subscribe(self) -> Subscriber:
        subscriber = Subscriber()
        if not self.subscribers:
            self.registry.subscribe(self.hear)
            self._ticker = gevent.spawn(self._tick_forever)
        self.subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)
        if not self.subscribers:
            self.registry.unsubscribe(self.hear)
            if self._ticker is not None:
                self._ticker.kill(block=False)
                self._ticker = None
            self._forget_pending()

    def snapshot(self) -> bytes:
        """Every node, as a page needs it to (re)build its view."""
        views = self.registry.views()
        return sse("snapshot", {"nodes": [node_row(v) for v in views],
                                "heartbeat": self.registry.heartbeat_interval})

    # --- what changed ------------------------------------------------------------------------

    def hear(self, event: Event) -> None:
        if isinstance(event, NodeEvent):
            if event.new is None and event.old is not None:  # forgotten
                self._removed.add(event.name)
                self._changed.discard(event.name)
            elif event.new is not None:
                self._changed.add(event.name)
                self._removed.discard(event.name)
            self._note(event.describe())
        elif isinstance(event, ProcessEvent):
            self._process(event.node, event.info)
            if event.info.origin != "run":  # as at the console: run's report tells its end
                self._note(event.describe())
        elif isinstance(event, ProcessesStarted):
            for info in event.procs:
                self._process(event.node, info)

    def _process(self, node: str, info: ProcInfo) -> None:
        if len(self._procs[node]) < PROCS_PER_NODE:
            self._procs[node].append(process_row(node, info))
        else:
            self._procs_more[node] += 1

    def _note(self, line: str) -> None:
        if len(self._notes) < NOTES_PER_TICK:
            self._notes.append(line)
        else:
            self._notes_more += 1

    def _forget_pending(self) -> None:
        self._changed.clear()
        self._removed.clear()
        self._procs.clear()
        self._procs_more.clear()
        self._notes.clear()
        self._notes_more = 0
        self._sent.clear()

    # --- the ticker -------------------------------------------------------------------------

    def _tick_forever(self) -> None:
        last_scan = 0.0
        while True:
            gevent.sleep(TICK)
            now = time.monotonic()
            scan = now - last_scan >= FIGURES_EVERY
            if scan:
                last_scan = now
            self.flush(now, scan)

    def flush(self, now: float, scan_figures: bool) -> None:
        """Send what changed since the last flush; with ``scan_figures``, also the nodes
        whose figures are new and were last sent at least FIGURES_EVERY ago."""
        if not (scan_figures or self._changed or self._removed or self._procs or self._notes):
            return
        nodes = self.registry.nodes()
        rows = []
        for node in nodes:
            sent_at, beat_sent = self._sent.get(node.name, (-FIGURES_EVERY, None))
            new_figures = (scan_figures and node.last_heartbeat != beat_sent
                           and now - sent_at >= FIGURES_EVERY)
            if node.name in self._changed or new_figures:
                rows.append(node_row(node.view(now)))
                self._sent[node.name] = (now, node.last_heartbeat)
        if len(self._sent) > 2 * len(nodes) + 64:  # forgotten nodes
            names = {node.name for node in nodes}
            self._sent = {k: v for k, v in self._sent.items() if k in names}
        messages = []
        if rows or self._removed:
            messages.append(sse("nodes", {"rows": rows, "removed": sorted(self._removed)}))
        if self._procs:
            messages.append(sse("procs", {"rows": [r for rs in self._procs.values() for r in rs],
                                          "more": dict(self._procs_more)}))
        if self._notes:
            messages.append(sse("notes", {"lines": self._notes, "more": self._notes_more}))
        self._changed.clear()
        self._removed.clear()
        self._procs = defaultdict(list)
        self._procs_more = defaultdict(int)
        self._notes = []
        self._notes_more = 0
        if messages:
            message = b"".join(messages)
            for subscriber in list(self.subscribers):
                subscriber.offer(message)
