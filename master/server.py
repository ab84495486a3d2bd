"""The master engine: the TCP server, its sessions, the node registry and liveness checks.

Everything here runs on the hub thread (see ``master.bridge``).
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import logging
import os
import time
import weakref
from pathlib import Path
from typing import Any

import gevent
import gevent.ssl

from common import fdlimit, tls
from common.errors import CorralError
from common.framing import DEFAULT_MAX_FRAME
from common.landing import PartialLedger
from common.liveness import PING_EVERY
from common.states import NodeState
from common.tls import TlsFiles
from master import transfers
from master.environment import GlobalEnvironment
from master.events import Event, NodeEvent
from master.front.results import GroupResult, ProgressCallback, TransferResult
from master.jobs import JobStore
from master.known_nodes import KnownNodes
from master.listener import Listener
from master.processes import ExitTracker
from master.refusals import Refusals
from master.registry import NodeRegistry
from master.scripts import ScriptLeftovers
from master.session import Session
from master.shared import SharedState
from master.web.metrics import EngineMetrics

log = logging.getLogger("corral.master")

KNOWN_REFRESH = 60.0  # seconds between saves of the known nodes' "last seen" times
# Round-trip pings per second at most, over all nodes: up to 2,500 nodes each is measured
# every PING_EVERY heartbeat intervals (5 s), at 10,000 every 20 s. A ping's reply costs
# the master about what a heartbeat does.
RTT_PINGS_PER_SECOND = 500


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
    stall_timeout: float = 30.0  # how long a node in a chained copy may take nothing
    tls: TlsFiles | None = None
    state_dir: Path | None = None  # the master's own files (default: the log folder)
    control: Path | None = None  # the control socket (None: no socket)
    http: tuple[str, int] | None = None  # the dashboard and /metrics (None: not served)
    # Origins besides its own whose pages the dashboard serves (a TLS-terminating proxy's
    # https://name), as common.argtypes.web_origin writes them.
    web_origins: tuple[str, ...] = ()
    job_calls: str = "all"  # what jobs may ask through their clients (master.forwarded)
    expect_nodes: int = 0  # how many nodes it should hold: a warning if it cannot
    open_files: fdlimit.OpenFileLimit | None = None  # as raised at start (None: as it is)


class MasterEngine:
    def __init__(self, config: MasterConfig, token: bytes) -> None:
        self.config = config
        self.token = token
        self.registry = NodeRegistry(config.heartbeat)
        self.refusals = Refusals(self.registry.publish)
        # The nodes seen before, expected back; saved when the list changes, and now and
        # then so that "last seen" stays close to true for a master that is killed.
        self.known_nodes = KnownNodes(config.state_dir or config.log_dir)
        self._known_dirty = False
        self._known_saved = 0.0
        self.exits = ExitTracker(self.registry)
        # Every exec and run is a job; global environment entries go into each.
        self.jobs = JobStore(config.state_dir or config.log_dir)
        self.environment = GlobalEnvironment(config.state_dir or config.log_dir)
        self.metrics = EngineMetrics(self.registry.views)
        # Temporary files of pulls in progress, removed at the next start if we are killed.
        self.pull_ledger = PartialLedger((config.state_dir or config.log_dir) / "pull-partials")
        self.shared = SharedState(config.state_dir or config.log_dir, self.registry)
        self.script_leftovers = ScriptLeftovers(self.registry, config.request_timeout)
        self._server: Listener | None = None
        self.capacity_warning: str | None = None  # set by start when the nodes cannot all fit
        self._ticker: gevent.Greenlet | None = None
        self._pinger: gevent.Greenlet | None = None
        # Sessions by when their next ping or keep-alive is due (see _ping_sessions).
        self._pings_due: list[tuple[float, int, weakref.ref[Session]]] = []
        self._ping_order = itertools.count()  # ties go first come, first served
        self.sessions: set[Session] = set()
        self.tls_context: Any = None
        self.control: Any = None  # a master.control.ControlServer with --control
        self.web: Any = None  # a master.web.server.WebServer with --http
        self.calls: Any = None  # its operations, which also serve calls forwarded by clients
        if config.tls is not None:
            self.tls_context = tls.configure(
                gevent.ssl.SSLContext(gevent.ssl.PROTOCOL_TLS_SERVER), config.tls)

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None
        host, port = self._server.address[:2]
        return host, port

    def start(self) -> None:
        self._server = Listener((self.config.host, self.config.port), self._handle,
                                self.sessions, self.config.open_files or fdlimit.current(),
                                self.tls_context is not None,
                                self._tell_refused)
        self._server.start()
        for leftover in self.pull_ledger.sweep():
            log.info("removed %s, left by a pull that was interrupted", leftover)
        self.registry.restore(self.known_nodes.load())
        self._check_capacity()
        self.registry.subscribe(self._note_node_change)
        self.registry.subscribe(self.metrics.hear)
        self._ticker = gevent.spawn(self._check_liveness)
        self._pinger = gevent.spawn(self._ping_sessions)
        log.info("listening on %s:%d", *self.address)
        from master.control import ControlServer  # it calls the operations, built on us
        self.calls = ControlServer(self, self.config.control)
        if self.config.control is not None:
            self.control = self.calls
            self.control.start()
        if self.config.http is not None:
            from master.web.server import WebServer  # it calls the operations, built on us
            try:
                self.web = WebServer(self, self.config.http)
                self.web.start()
            except OSError as exc:
                self.web = None
                self.stop()  # the node port and the control socket, already open
                host, port = self.config.http
                reason = os.strerror(exc.errno) if exc.errno else str(exc)
                raise CorralError(f"cannot serve the dashboard on {host}:{port}: {reason}"
                                  ) from None

    @property
    def capacity(self) -> int:
        """How many client connections this master can hold at once."""
        assert self._server is not None
        return self._server.capacity

    def _check_capacity(self) -> None:
        assert self._server is not None
        limit = self._server.limit
        log.info("can hold %d client connections (%s, %d kept for the master's own files)",
                 self.capacity, limit.describe(), fdlimit.RESERVED)
        wanted = max(self.config.expect_nodes, self.registry.size())
        if wanted > self.capacity:
            asked = (f"--expect-nodes {self.config.expect_nodes}"
                     if self.config.expect_nodes >= self.registry.size()
                     else "the nodes it knows from before")
            self.capacity_warning = (
                f"this master can hold {self.capacity} client connections ({limit.describe()})"
                f" but {wanted} are expected ({asked}); the rest will be refused: raise the "
                "limit (ulimit -n, LimitNOFILE=)")
            log.warning("%s", self.capacity_warning)

    def _tell_refused(self, source: str, reason: str) -> None:
        self.registry.publish(NodeEvent(source, None, None, reason))

    def stop(self) -> None:
        if self.web is not None:
            self.web.stop()
        if self.control is not None:
            self.control.stop()
        for greenlet in (self._ticker, self._pinger):
            if greenlet is not None:
                greenlet.kill()
        for session in list(self.sessions):
            session.close("master shutting down")
        if self._server is not None:
            self._server.stop(timeout=1)
            self.known_nodes.save(self.registry.known())
        self.jobs.close()

    def push(self, nodeset: str | None, sources: list[str], dest: str, recursive: bool,
             progress: ProgressCallback | None, follow: bool, star: bool = False
             ) -> GroupResult[TransferResult]:
        """``copy``, whichever front end asks, with its bytes counted for /metrics: through
        a chain of the nodes, whose tickets the token signs, unless ``star``."""
        group = transfers.push(self.registry, nodeset, sources, dest, recursive, progress,
                               follow, token=self.token, star=star,
                               stall=self.config.stall_timeout)
        self.metrics.moved("copied", sum(r.bytes for r in group.results.values()))
        return group

    def pull(self, nodeset: str | None, remote_paths: list[str], local_dir: str,
             progress: ProgressCallback | None, follow: bool) -> GroupResult[TransferResult]:
        group = transfers.pull(self.registry, nodeset, remote_paths, local_dir, progress,
                               self.pull_ledger, follow)
        self.metrics.moved("pulled", sum(r.bytes for r in group.results.values()))
        return group

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
            now = time.monotonic()
            self.registry.check_liveness(now)
            self.refusals.flush(now)
            if self._known_dirty or now - self._known_saved >= KNOWN_REFRESH:
                self._known_dirty, self._known_saved = False, now
                self.known_nodes.save(self.registry.known())

    def schedule_ping(self, session: Session, due: float | None) -> None:
        """Call ``session.ping`` again at monotonic time ``due`` (None: never)."""
        if due is not None:  # a session that ends meanwhile is not kept alive by this
            heapq.heappush(self._pings_due, (due, next(self._ping_order), weakref.ref(session)))

    def _ping_sessions(self) -> None:
        """Round-trip pings and keep-alives for the sessions whose turn it is, from one
        greenlet: a greenlet per session sleeping between pings cost memory and wake-ups
        at 10,000 nodes, and asking each of them every second whether it was due cost
        10,000 calls a second. So sessions wait in a heap by the time they are next due."""
        due = self._pings_due
        while True:
            gevent.sleep(self.config.heartbeat)
            now = time.monotonic()
            rtt_every = self.rtt_every()
            while due and due[0][0] <= now:
                session = heapq.heappop(due)[2]()
                if session is not None:
                    self.schedule_ping(session, session.ping(now, rtt_every))

    def rtt_every(self) -> float:
        """Seconds between two round-trip pings of a node. Each costs a reply to read, so
        with thousands of nodes they are spaced out (keep-alives, which ask no reply, still
        go every PING_EVERY intervals: see ``Session.ping``)."""
        return max(self.config.heartbeat * PING_EVERY,
                   len(self.sessions) / RTT_PINGS_PER_SECOND)

    def _note_node_change(self, event: Event) -> None:
        if isinstance(event, NodeEvent) and (
                (event.old is None and event.new is not None)  # joined
                or event.new is NodeState.GONE
                or (event.old is NodeState.GONE and event.new is None)):  # forgotten
            self._known_dirty = True

    def refused(self, session: Session, name: str, reason: str) -> None:
        """A connection refused for its token, its name or its certificate: told once per
        source address and reason, then counted."""
        source = session.address.rsplit(":", 1)[0]
        self.refusals.note(source, name, reason, time.monotonic())
