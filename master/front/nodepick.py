"""``select``: nodes ranked by a figure of their latest heartbeat, best first (WISH's
``nget``), for a shell to hand to ``-w``. Pure functions over the node list."""

from __future__ import annotations

from collections.abc import Callable

from common.states import NodeState
from master.front.results import NodeView, natural_key

# The figure each ranking reads, and whether less is better. A node without the figure
# (no heartbeat yet) comes after every node that has it.
RANKINGS: dict[str, tuple[Callable[[NodeView], float | None], bool]] = {
    "load": (lambda node: node.load[0] if node.load else None, True),  # 1-minute average
    "mem": (lambda node: node.mem_available, False),  # available memory
    "disk": (lambda node: node.disk_free, False),  # free disk of the work folder
    "rtt": (lambda node: node.rtt_ms, True),  # round-trip time to the master
}
STATE_CHOICES = ("CONNECTING", "READY", "MISSING", "GONE", "any")


# How fresh a node's figures are: a MISSING node's are some heartbeats old, a GONE node's
# are what it said before it went (perhaps days ago). A node comes after every node of a
# fresher tier whatever its figures, so a stale figure never ranks a dead node first.
_STALENESS = {NodeState.CONNECTING: 0, NodeState.READY: 0, NodeState.MISSING: 1,
              NodeState.GONE: 2}


def pick(nodes: list[NodeView], by: str | None, state: str) -> list[NodeView]:
    """The nodes in ``state`` (or any), best first by ``by`` (None: in node order); ties
    in node order. Ranked, live nodes come first, then MISSING ones, then GONE ones, each
    group by its figures."""
    chosen = sorted((node for node in nodes if state == "any" or str(node.state) == state),
                    key=lambda node: natural_key(node.name))
    if by is None:
        return chosen
    figure, less_is_better = RANKINGS[by]

    def key(node: NodeView) -> tuple[int, bool, float]:
        staleness = _STALENESS.get(node.state, 2)
        value = figure(node)
        if value is None:
            return staleness, True, 0.0
        return staleness, False, value if less_is_better else -value

    return sorted(chosen, key=key)  # stable: ties keep node order
