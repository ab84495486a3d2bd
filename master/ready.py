"""Waiting on the hub until enough nodes are READY (``list --wait``)."""

from __future__ import annotations

import logging
import time

from common.states import NodeState
from master.front.results import WaitOutcome
from master.registry import NodeRegistry

log = logging.getLogger("corral.master")


def wait_ready(registry: NodeRegistry, count: int, timeout: float | None = None
               ) -> WaitOutcome:
    """Wait until ``count`` nodes are READY or ``timeout`` seconds pass (None: for ever)."""
    log.info("waiting for %d READY nodes (timeout %s)", count, timeout)
    started = time.monotonic()
    deadline = None if timeout is None else started + timeout
    while True:
        ready = registry.count(NodeState.READY)
        remaining = None if deadline is None else deadline - time.monotonic()
        if ready >= count or (remaining is not None and remaining <= 0):
            return WaitOutcome(reached=ready >= count, ready=ready, wanted=count,
                               waited=time.monotonic() - started, nodes=registry.views())
        registry.wait_for_change(remaining)
