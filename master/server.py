"""The master engine: the TCP server, its sessions, the node registry and liveness checks.

Everything here runs on the hub thread (see ``master.bridge``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import gevent
import gevent.ssl
from gevent.server import StreamServer

from common import tls
from common.framing import DEFAULT_MAX_FRAME
from common.landing import PartialLedger
from common.tls import TlsFiles
from master.processes import ExitTracker
from master.registry import NodeRegistry
from master.session import Session

log = logging.getLogger("corral.master")


@dataclasses.dataclass(frozen=True)
class MasterConfig:
    host: str = "127.0.0.1"
    port: int = 7070
    token_file: Path | None = None
    heartbeat: float = 1.0
    log_dir: Path = Path("logs")
    max_frame: int = DEFAULT_MAX_FRAME
    handshake_timeout: float = 5.0
    request_timeout: float = 10.0  # how long a node may take to answer a request
    tls: TlsFiles | None = None
    state_dir: Path | None = None  # the master's own files (default: the log folder)


class MasterEngine:
    def __init__(self, config: MasterConfig, token: bytes) -> None:
        self.config = config
        self.token = token
        self.registry = NodeRegistry(config.heartbeat)
        self.exits = ExitTracker(self.registry)
        # Temporary files of pulls in progress, removed at the next start if we are killed.
        self.pull_ledger = PartialLedger((config.state_dir or config.log_dir) / "pull-partials")
        self._server: StreamServer | None = None
        self._ticker: gevent.Greenlet | None = None
        self.sessions: set[Session] = set()
        self.tls_context: Any = None
        if config.tls is not None:
            self.tls_context = tls.configure(
                gevent.ssl.SSLContext(gevent.ssl.PROTOCOL_TLS_SERVER), config.tls)

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None
        host, port = self._server.address[:2]
        return host, port

    def start(self) -> None:
        self._server = StreamServer((self.config.host, self.config.port), self._handle,
                                    backlog=2048)
        self._server.max_accept = 1000  # drain a reconnect storm in big gulps
        self._server.start()
        for leftover in self.pull_ledger.sweep():
            log.info("removed %s, left by a pull that was interrupted", leftover)
        self._ticker = gevent.spawn(self._check_liveness)
        log.info("listening on %s:%d", *self.address)

    def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.kill()
        for session in list(self.sessions):
            session.close("master shutting down")
        if self._server is not None:
            self._server.stop(timeout=1)

    def _handle(self, sock: Any, address: tuple[str, int]) -> None:
        session = Session(sock, address, self)
        self.sessions.add(session)
        try:
            session.run()
        finally:
            self.sessions.discard(session)

    def _check_liveness(self) -> None:
        # Twice per interval, so MISSING is noticed within half an interval of its due time.
        while True:
            gevent.sleep(self.config.heartbeat / 2)
            self.registry.check_liveness(time.monotonic())
