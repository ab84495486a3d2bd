"""The master's library API: what the console (and tests, and scripts) call. It never prints.

Every method is called from an ordinary thread and runs its work on the hub thread through
the bridge, so callers never touch gevent objects.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path

from common import auth
from common.states import NodeState
from master.bridge import HubThread
from master.registry import NodeEvent, NodeView
from master.server import MasterConfig, MasterEngine

log = logging.getLogger("corral.master")


@dataclasses.dataclass(frozen=True)
class WaitOutcome:
    reached: bool
    ready: int
    wanted: int
    waited: float
    nodes: list[NodeView]


class MasterAPI:
    def __init__(self, engine: MasterEngine, hub: HubThread) -> None:
        self._engine = engine
        self._hub = hub

    @classmethod
    def start(cls, config: MasterConfig, token: bytes) -> MasterAPI:
        engine = MasterEngine(config, token)
        hub = HubThread()
        hub.start(engine.start)
        return cls(engine, hub)

    @property
    def address(self) -> tuple[str, int]:
        return self._engine.address

    @property
    def config(self) -> MasterConfig:
        return self._engine.config

    def shutdown(self) -> None:
        self._hub.call(self._engine.stop)
        self._hub.stop()

    def subscribe(self, listener: Callable[[NodeEvent], object]) -> None:
        """``listener`` is called on the hub thread: it must be quick and thread-safe."""
        self._hub.call(self._engine.registry.subscribe, listener)

    def nodes(self) -> list[NodeView]:
        return self._hub.call(self._engine.registry.views)

    def wait_ready(self, count: int, timeout: float | None) -> WaitOutcome:
        """Wait until ``count`` nodes are READY or ``timeout`` seconds pass."""
        return self._hub.call(self._wait_ready, count, timeout)

    def _wait_ready(self, count: int, timeout: float | None) -> WaitOutcome:
        registry = self._engine.registry
        log.info("waiting for %d READY nodes (timeout %s)", count, timeout)
        started = time.monotonic()
        deadline = None if timeout is None else started + timeout
        while True:
            ready = registry.count(NodeState.READY)
            remaining = None if deadline is None else deadline - time.monotonic()
            if ready >= count or (remaining is not None and remaining <= 0):
                return WaitOutcome(
                    reached=ready >= count,
                    ready=ready,
                    wanted=count,
                    waited=time.monotonic() - started,
                    nodes=registry.views(),
                )
            registry.wait_for_change(remaining)


def load_master_token(token_file: Path | None) -> tuple[bytes, Path, bool]:
    path = token_file or auth.default_token_path()
    token, created = auth.ensure_token(path)
    return token, path, created
