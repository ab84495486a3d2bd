"""The master's figures for Prometheus (``/metrics``), through ``prometheus-client``.

Node figures are read from the registry when scraped, so they are exactly what ``list``
shows at that moment; counters (requests, time-outs, exits, bytes moved) are kept as the
engine works. Each engine has a registry of its own: tests run several masters in one
process, and a scrape must see only its master.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from common.procs import ProcInfo
from common.states import NodeState, ProcState
from master.events import Event, NodeEvent, ProcessEvent
from master.front.results import NodeView

# Seconds: a ping on a LAN takes well under a millisecond; a big exec or a log chunk from a
# busy node may take seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0, 30.0)


def exit_outcome(info: ProcInfo) -> str | None:
    """How an ended process ended, as a label value; None for a stop or a continue."""
    state = info.proc_state
    if state is ProcState.EXITED:
        return "exit_0" if info.exit_code == 0 else "exit_nonzero"
    if state is ProcState.KILLED:
        return "killed"
    if state is ProcState.SPAWN_FAILED:
        return "spawn_failed"
    if state is ProcState.ENDED_UNKNOWN:
        return "unknown"
    return None


class EngineMetrics:
    """What the engine counts while it works, and the collector of node figures."""

    def __init__(self, views: Callable[[], list[NodeView]]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.latency = Histogram(
            "corral_request_duration_seconds",
            "Time from sending a request to a node to its reply, by request type",
            ["command"], registry=self.registry, buckets=LATENCY_BUCKETS)
        self.timeouts = Counter(
            "corral_requests_timed_out", "Requests a node did not answer in time, by type",
            ["command"], registry=self.registry)
        self.exits = Counter(
            "corral_process_exits", "Process ends reported by the nodes, by node and outcome",
            ["node", "outcome"], registry=self.registry)
        self.transferred = Counter(
            "corral_transfer_bytes", "Bytes of files landed by copy (to the nodes, counted "
            "once per node) and by pull (from them)", ["direction"], registry=self.registry)
        for direction in ("copied", "pulled"):
            self.transferred.labels(direction)  # present, at 0, before the first transfer
        # Heartbeats count running processes only; stops and continues come as events.
        self._stopped: dict[str, set[int]] = {}
        self.registry.register(NodeCollector(views, self.stopped_count))

    def request_done(self, command: str, seconds: float) -> None:
        self.latency.labels(command).observe(seconds)

    def request_timed_out(self, command: str) -> None:
        self.timeouts.labels(command).inc()

    def moved(self, direction: str, count: int) -> None:
        self.transferred.labels(direction).inc(count)

    def hear(self, event: Event) -> None:
        """A registry listener: counts process ends, keeps which processes are stopped."""
        if isinstance(event, ProcessEvent):
            stopped = self._stopped.setdefault(event.node, set())
            if event.info.proc_state is ProcState.STOPPED:
                stopped.add(event.info.pid)
            else:
                stopped.discard(event.info.pid)
            if outcome := exit_outcome(event.info):
                self.exits.labels(event.node, outcome).inc()
        elif isinstance(event, NodeEvent) and event.new is NodeState.GONE:
            self._stopped.pop(event.name, None)  # its processes are no longer watched

    def stopped_count(self, node: str) -> int:
        return len(self._stopped.get(node, ()))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class NodeCollector(Collector):
    """The node list as gauges, read at scrape time."""

    def __init__(self, views: Callable[[], list[NodeView]],
                 stopped_count: Callable[[str], int]) -> None:
        self._views = views
        self._stopped_count = stopped_count

    def describe(self) -> list[Any]:
        return []  # the families are known only when collected

    def collect(self) -> Iterator[GaugeMetricFamily]:
        nodes = self._views()
        by_state = GaugeMetricFamily("corral_nodes", "Nodes by state", labels=["state"])
        for each in NodeState:
            by_state.add_metric([each.value], sum(1 for n in nodes if n.state is each))
        yield by_state
        states = GaugeMetricFamily("corral_node_state", "1 for the state each node is in",
                                   labels=["node", "state"])
        for node in nodes:
            for each in NodeState:
                states.add_metric([node.name, each.value], 1.0 if node.state is each else 0.0)
        yield states
        yield from self._figures(nodes, self._stopped_count)

    @staticmethod
    def _figures(nodes: list[NodeView], stopped_count: Callable[[str], int]
                 ) -> Iterator[GaugeMetricFamily]:
        age = _family("heartbeat_age_seconds", "Seconds since the node's last heartbeat")
        rtt = _family("rtt_seconds", "Round-trip time of the master's last ping")
        load = GaugeMetricFamily("corral_node_load", "Load average over 1, 5 and 15 minutes",
                                 labels=["node", "minutes"])
        cpu = _family("cpu_percent", "CPU use of the whole machine, percent")
        available = _family("memory_available_bytes", "Memory available")
        total = _family("memory_total_bytes", "Memory installed")
        disk = _family("disk_free_bytes", "Free space where the node's work folder is")
        procs = GaugeMetricFamily("corral_node_processes",
                                  "Processes corral started on the node, by state (running: "
                                  "from its last heartbeat; stopped: from stop and continue "
                                  "events)",
                                  labels=["node", "state"])
        for node in nodes:
            if node.since_heartbeat is not None:
                age.add_metric([node.name], node.since_heartbeat)
            if node.rtt_ms is not None:
                rtt.add_metric([node.name], node.rtt_ms / 1000)
            if node.load is not None:
                for minutes, value in zip(("1", "5", "15"), node.load, strict=True):
                    load.add_metric([node.name, minutes], value)
            figures: list[tuple[GaugeMetricFamily, float | None]] = [
                (cpu, node.cpu_percent), (available, node.mem_available),
                (total, node.mem_total), (disk, node.disk_free)]
            for family, figure in figures:
                if figure is not None:
                    family.add_metric([node.name], figure)
            if node.processes is not None:
                procs.add_metric([node.name, "running"], node.processes)
                procs.add_metric([node.name, "stopped"], stopped_count(node.name))
        yield from (age, rtt, load, cpu, available, total, disk, procs)


def _family(name: str, documentation: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"corral_node_{name}", documentation, labels=["node"])
