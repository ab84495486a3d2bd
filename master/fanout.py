"""Sending one request to many nodes at once and gathering what each answered.

A ``GroupResult`` maps each target node to its value or its error (fabric's shape): one
slow or failing node never stops the others, and the caller decides what a failure means.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import gevent
import gevent.pool

from common.errors import CorralError, ErrorCode, UsageError
from common.messages import Message
from common.nodeset import select
from common.states import NodeState
from master.front.results import GroupResult
from master.registry import Node, NodeRegistry, natural_key

T = TypeVar("T")
MAX_PID = 2**31  # pid_t is a signed 32-bit number


def parse_ref(ref: str) -> tuple[str, int]:
    """``n1:4242`` -> ("n1", 4242)."""
    node, sep, pid = ref.rpartition(":")
    if not sep or not node or not pid.isascii() or not pid.isdigit():
        raise UsageError(f"bad process reference {ref!r}: expected NODE:PID")
    if not 0 < int(pid) < MAX_PID:
        raise UsageError(f"bad process reference {ref!r}: pid out of range")
    return node, int(pid)


def resolve_targets(registry: NodeRegistry, nodeset: str | None
                    ) -> tuple[list[Node], dict[str, CorralError]]:
    """The nodes a command goes to: ``nodeset`` of known nodes, or every READY node.

    Named nodes that cannot take a request now come back as errors, not silently dropped.
    """
    nodes = registry.nodes()
    if nodeset is None:
        ready = [node for node in nodes if node.state is NodeState.READY]
        if not ready:
            raise UsageError("no READY nodes")
        return ready, {}
    wanted = set(select(nodeset, [node.name for node in nodes]))
    chosen, errors = [], {}
    for node in nodes:
        if node.name not in wanted:
            continue
        if node.session is None:
            errors[node.name] = CorralError(f"not connected ({node.state})",
                                            ErrorCode.DISCONNECTED)
        else:
            chosen.append(node)
    return chosen, errors


def fan_out(nodes: list[Node], make: Callable[[Node], Callable[[int], Message]],
            timeout: float, convert: Callable[[Node, Any], T],
            errors: dict[str, CorralError] | None = None) -> GroupResult[T]:
    """Send ``make(node)(req_id)`` to every node at once; ``convert`` each reply value."""
    results: dict[str, T] = {}
    failures: dict[str, CorralError] = dict(errors or {})

    def ask(node: Node) -> None:
        session = node.session
        try:
            if session is None:
                raise CorralError(f"not connected ({node.state})", ErrorCode.DISCONNECTED)
            results[node.name] = convert(node, session.request(make(node), timeout))
        except CorralError as exc:
            failures[node.name] = exc

    if len(nodes) == 1:  # no pool and greenlet for one node: asked from this greenlet,
        ask(nodes[0])  # whose cancelling stops the request as killing the pool would
        return gathered(results, failures, nodes)
    group = gevent.pool.Group()
    for node in nodes:
        group.spawn(ask, node)
    try:
        group.join()
    finally:
        group.kill()  # cancelled (Ctrl-C): stop every request still waiting
    return gathered(results, failures, nodes)


def gathered(results: dict[str, T], errors: dict[str, CorralError], nodes: list[Node]
             ) -> GroupResult[T]:
    """The group result of ``nodes`` (and of named nodes that could not be asked)."""
    order = sorted({node.name for node in nodes} | set(errors), key=natural_key)
    return GroupResult(results=results, errors=errors, order=order)
