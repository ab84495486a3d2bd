"""Turn API results into the tables the console prints (tabulate: never wraps, greps well)."""

from __future__ import annotations

from collections.abc import Sequence

from tabulate import tabulate

from master.registry import NodeView


def human_bytes(count: int | None) -> str:
    if count is None:
        return "-"
    value = float(count)
    for unit in ("B", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}T"


def _number(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def nodes_table(nodes: Sequence[NodeView]) -> str:
    headers = ["name", "id", "address", "state", "hb age s", "rtt ms", "load 1/5/15",
               "free mem", "free disk", "procs"]
    rows = [
        [
            node.name,
            node.node_id[:8],
            node.address,
            str(node.state),
            _number(node.since_heartbeat, ".1f"),
            _number(node.rtt_ms, ".2f"),
            "-" if node.load is None else "/".join(f"{v:.2f}" for v in node.load),
            human_bytes(node.mem_available),
            human_bytes(node.disk_free),
            "-" if node.processes is None else str(node.processes),
        ]
        for node in nodes
    ]
    return tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)
