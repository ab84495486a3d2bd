"""The dashboard's HTTP server (``--http``): gevent's WSGI server on the master's hub.

Handlers run as greenlets on the hub, so they call the engine's operations directly, as
the control socket does. ``/healthz`` and ``/metrics`` are open (bind them where you
trust); the page's data, its event stream and its actions need a session opened with the
token, and every POST also needs the session's CSRF token.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
import urllib.parse
from collections.abc import Callable, Iterator
from importlib import resources
from typing import TYPE_CHECKING, Any

import gevent
import gevent.pool
import gevent.queue
import gevent.ssl
from gevent.pywsgi import WSGIHandler, WSGIServer
from prometheus_client import Gauge

from common.errors import CorralError, ErrorCode
from common.jobs import looks_like_job
from common.names import name_problem
from common.nodeset import fold
from master.fanout import parse_ref
from master.front import render
from master.operations import Operations
from master.web.feed import RESYNC, Feed, process_row, sse
from master.web.http import (
    HttpError,
    Request,
    StartResponse,
    host_name,
    host_problem,
    origin_problem,
    respond,
    respond_json,
    session_cookie,
)
from master.web.sessions import COOKIE, IDLE_LIMIT, WebSession, WebSessions

if TYPE_CHECKING:
    from master.server import MasterEngine

log = logging.getLogger("corral.master.web")

STATIC = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript",
          "style.css": "text/css"}
KEEPALIVE = 15.0  # seconds between comments on an idle event stream (finds dead peers)
MAX_STREAMS = 100  # event streams open at once
CONNECTIONS = 256  # connections served at once (streams included)
SOCKET_TIMEOUT = 60.0  # seconds a connection may send nothing or take nothing we send
HEAD_DEADLINE = 10.0  # seconds a request line and its headers may take, however they drip
PROCESS_ROWS = 500  # processes of one node shown, the newest first
JOB_ROWS = 200  # jobs shown, the newest first
LOG_LINES_MAX = 5000
RUN_TIMEOUT_MAX = 600.0
SIGNALS = {"INT": 2, "KILL": 9}  # the page's kill and sKill

Handler = Callable[[Request, StartResponse], Any]


class WebServer:
    def __init__(self, engine: MasterEngine, address: tuple[str, int]) -> None:
        self.engine = engine
        self.bound_host = address[0]
        self.origins = frozenset(engine.config.web_origins)
        self.origin_hosts = frozenset(host_name(urllib.parse.urlsplit(origin).netloc)
                                      for origin in self.origins)
        self.ops = Operations(engine)
        self.feed = Feed(engine.registry)
        self.sessions = WebSessions(lambda: engine.token)
        self.secure = engine.config.tls is not None
        # Under HTTPS the __Host- prefix makes the browser refuse the cookie unless it is
        # Secure, for this host only, on every path: no sibling host can plant one.
        self.cookie = f"__Host-{COOKIE}" if self.secure else COOKIE
        self.streams = 0
        Gauge("corral_dashboard_streams", "Dashboard pages open (their event streams)",
              registry=engine.metrics.registry).set_function(lambda: self.streams)
        ssl_args: dict[str, Any] = {}
        if engine.config.tls is not None:
            # Browsers bring no client certificate: the master's own certificate and key,
            # without the client CA the node protocol requires.
            context = gevent.ssl.SSLContext(gevent.ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = gevent.ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(engine.config.tls.cert, engine.config.tls.key)
            ssl_args["ssl_context"] = context
        # No access log: pywsgi's would print to stderr, which garbles the console. A pool:
        # connections beyond it wait in the backlog instead of taking the descriptors the
        # nodes' connections need.
        self._server = _Server(address, self.app, log=None, error_log=_ErrorLog(),
                                  spawn=gevent.pool.Pool(CONNECTIONS),
                                  handler_class=_Handler, **ssl_args)
        self._routes: dict[tuple[str, str], Handler] = {
            ("GET", "/"): self._index,
            ("GET", "/healthz"): self._healthz,
            ("HEAD", "/healthz"): self._healthz,  # some load balancers ask so
            ("GET", "/metrics"): self._metrics,
            ("POST", "/login"): self._login,
            ("POST", "/logout"): self._logout,
            ("GET", "/api/session"): self._session_info,
            ("GET", "/events"): self._events,
            ("GET", "/api/processes"): self._processes,
            ("GET", "/api/log"): self._log,
            ("GET", "/api/jobs"): self._jobs,
            ("GET", "/api/job"): self._job,
            ("POST", "/api/signal"): self._signal,
            ("POST", "/api/signal-all"): self._signal_all,
            ("POST", "/api/run"): self._run,
        }

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.address[:2]
        return host, port

    @property
    def url(self) -> str:
        host, port = self.address
        shown = f"[{host}]" if ":" in host else host
        return f"{'https' if self.secure else 'http'}://{shown}:{port}/"

    def start(self) -> None:
        self._server.start()
        log.info("dashboard on %s", self.url)

    def stop(self) -> None:
        self._server.stop(timeout=1)

    # --- dispatch -------------------------------------------------------------------------

    def app(self, environ: dict[str, Any], start: StartResponse) -> Any:
        request = Request(environ)
        try:
            problem = host_problem(request, self.bound_host, self.origin_hosts)
            if problem is not None and request.path not in ("/healthz", "/metrics"):
                raise HttpError(421, problem)
            if request.path.startswith("/static/") and request.method == "GET":
                return self._static(request.path.removeprefix("/static/"), start)
            handler = self._routes.get((request.method, request.path))
            if handler is None:
                allowed = [method for method, path in self._routes if path == request.path]
                if allowed:
                    return respond_json(start, 405, {"error": "method not allowed"},
                                        [("Allow", ", ".join(allowed))])
                raise HttpError(404, "no such page")
            if request.method == "POST" and (
                    problem := origin_problem(request, self.origins)) is not None:
                raise HttpError(403, problem)
            return handler(request, start)
        except HttpError as exc:
            return respond_json(start, exc.status, {"error": exc.message})
        except CorralError as exc:
            status = 404 if exc.code in (ErrorCode.UNKNOWN_NODE, ErrorCode.NOT_FOUND) else 400
            return respond_json(start, status, {"error": exc.message})

    def _session(self, request: Request) -> WebSession:
        session = self.sessions.find(request.cookie(self.cookie), time.monotonic())
        if session is None:
            raise HttpError(401, "log in first")
        return session

    def _checked_post(self, request: Request) -> tuple[WebSession, dict[str, Any]]:
        """The session of a POST that may act, and its body: 401 without a session, 403
        without its CSRF token."""
        session = self._session(request)
        if not self.sessions.csrf_ok(session, request.header("x-csrf-token")):
            raise HttpError(403, "missing or wrong CSRF token")
        return session, request.json_body()

    # --- open to all ----------------------------------------------------------------------

    def _index(self, _request: Request, start: StartResponse) -> Any:
        return self._static("index.html", start)

    def _static(self, name: str, start: StartResponse) -> Any:
        if name not in STATIC:
            raise HttpError(404, "no such file")
        body = resources.files("master.web").joinpath("static", name).read_bytes()
        return respond(start, 200, body, STATIC[name])

    def _healthz(self, _request: Request, start: StartResponse) -> Any:
        return respond(start, 200, b"ok\n", "text/plain; charset=utf-8")

    def _metrics(self, _request: Request, start: StartResponse) -> Any:
        return respond(start, 200, self.engine.metrics.exposition(),
                       "text/plain; version=0.0.4; charset=utf-8")

    # --- the session ----------------------------------------------------------------------

    def _login(self, request: Request, start: StartResponse) -> Any:
        # The body first: reading it yields, and guesses parked there would all have
        # passed a count taken before it.
        token = request.json_body().get("token")
        now = time.monotonic()
        if (wait := self.sessions.wait_before_login(request.remote, now)) > 0:
            raise HttpError(429, f"too many wrong tokens; try again in {wait:.0f} s")
        if not isinstance(token, str):
            raise HttpError(400, "give the token")
        session = self.sessions.login(token, request.remote, now)
        if session is None:
            log.warning("web: wrong token from %s", request.remote)
            raise HttpError(401, "wrong token")
        log.info("web: %s logged in", request.remote)
        cookie = session_cookie(self.cookie, session.sid, self.secure, int(IDLE_LIMIT))
        return respond_json(start, 200, self._about(session), [("Set-Cookie", cookie)])

    def _logout(self, request: Request, start: StartResponse) -> Any:
        session, _body = self._checked_post(request)
        self.sessions.logout(session.sid)
        return respond_json(start, 200, {}, [("Set-Cookie", session_cookie(
            self.cookie, "", self.secure, 0))])

    def _session_info(self, request: Request, start: StartResponse) -> Any:
        return respond_json(start, 200, self._about(self._session(request)))

    def _about(self, session: WebSession) -> dict[str, Any]:
        return {"csrf": session.csrf, "heartbeat": self.engine.config.heartbeat}

    # --- the live stream ------------------------------------------------------------------

    def _events(self, request: Request, start: StartResponse) -> Any:
        sid = self._session(request).sid
        if self.streams >= MAX_STREAMS:
            raise HttpError(503, f"{MAX_STREAMS} event streams are open already")
        start("200 OK", [("Content-Type", "text/event-stream"), ("X-Accel-Buffering", "no"),
                         ("Cache-Control", "no-store")])
        return self._stream(sid)

    def _stream(self, sid: str) -> Iterator[bytes]:
        """A snapshot, then what changes; a fresh snapshot whenever this stream fell
        behind. Ends when its session does (logout, token rotated, expired)."""
        self.streams += 1
        subscriber = self.feed.subscribe()
        try:
            yield b"retry: 2000\n\n" + self.feed.snapshot()
            while True:
                try:
                    item = subscriber.queue.get(timeout=KEEPALIVE)
                except gevent.queue.Empty:
                    item = b": keep-alive\n\n"
                if self.sessions.find(sid, time.monotonic()) is None:
                    yield sse("logout", {})
                    return
                if item == RESYNC:
                    subscriber.behind = False
                    yield self.feed.snapshot()
                elif isinstance(item, bytes):
                    yield item
        finally:
            self.streams -= 1
            self.feed.unsubscribe(subscriber)

    # --- what a node runs -----------------------------------------------------------------

    def _node_name(self, text: str | None) -> str:
        name = text or ""
        if (problem := name_problem(name)) is not None:
            raise HttpError(400, problem)
        return self.engine.registry.by_name(name).name

    def _processes(self, request: Request, start: StartResponse) -> Any:
        self._session(request)
        name = self._node_name(request.query.get("node"))
        group = self.ops.rusage(name)
        if name in group.errors:
            raise HttpError(502, f"{name}: {group.errors[name].message}")
        infos = sorted(group.results[name].processes, key=lambda p: p.seq, reverse=True)
        return respond_json(start, 200, {
            "node": name, "total": len(infos), "now": time.time(),
            "rows": [process_row(name, info) for info in infos[:PROCESS_ROWS]]})

    def _jobs(self, request: Request, start: StartResponse) -> Any:
        """The jobs, newest first (each node of each job is asked for its table)."""
        self._session(request)
        views = sorted(self.ops.jobs_list(), key=lambda v: v.created, reverse=True)
        return respond_json(start, 200, {"rows": [{
            "job": v.job, "command": v.command, "origin": v.origin, "created": v.created,
            "nodes": fold(v.nodes) if v.nodes else "", "size": v.size, "running": v.running,
            "ended": v.ended, "lost": v.lost, "worst": v.worst} for v in views[:JOB_ROWS]],
            "total": len(views)})

    def _job(self, request: Request, start: StartResponse) -> Any:
        """A job's members, as processes (those their node cannot show, with the reason)."""
        self._session(request)
        job = request.query.get("job", "")
        if not looks_like_job(job):
            raise HttpError(400, f"not a job: {job!r} (J12, or J12.3 for one member)")
        rows = []
        for member in self.ops.job_members(job):
            if member.info is not None:
                rows.append(process_row(member.node, member.info))
            else:
                rows.append({"node": member.node, "ref": None, "pid": member.pid,
                             "job": f"{member.job}.{member.rank}", "command": "",
                             "state": "", "status": member.unreachable, "live": False,
                             "started": None, "ended": None, "cpu": None, "rss": None,
                             "origin": ""})
        return respond_json(start, 200, {"job": job, "total": len(rows), "now": time.time(),
                                         "rows": rows})

    def _log(self, request: Request, start: StartResponse) -> Any:
        self._session(request)
        ref = request.query.get("ref", "")
        parse_ref(ref)
        offset = _number(request.query.get("offset"), "offset")
        lines = _number(request.query.get("lines"), "lines") or 100
        chunk = self.ops.log(ref, None if offset is not None else min(lines, LOG_LINES_MAX),
                             offset)
        return respond_json(start, 200, {"ref": ref, "text": chunk.data.decode(
            "utf-8", errors="replace"), "offset": chunk.offset, "ended": chunk.ended})

    # --- actions --------------------------------------------------------------------------

    def _signal(self, request: Request, start: StartResponse) -> Any:
        _session, body = self._checked_post(request)
        signame, signum = _signal_of(body)
        refs = body.get("refs")
        if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
            raise HttpError(400, "give refs: a list of NODE:PID, jobs (J12) or members (J12.3)")
        log.info("web %s: signal %s to %s", request.remote, signame, " ".join(refs))
        outcomes = self.ops.signal(refs, signum)
        text = render.signal_table(outcomes, f"SIG{signame}")
        return respond_json(start, 200, {
            "ok": all(o.ok for o in outcomes), "text": text.text, "errors": text.errors,
            "rows": [{"ref": o.ref, "ok": o.ok, "message": o.message} for o in outcomes]})

    def _targets(self, body: dict[str, Any]) -> str:
        nodes = body.get("nodes")
        if not isinstance(nodes, list) or not nodes or not all(isinstance(n, str)
                                                               for n in nodes):
            raise HttpError(400, "give nodes: a list of node names")
        return ",".join(self._node_name(name) for name in nodes)

    def _signal_all(self, request: Request, start: StartResponse) -> Any:
        _session, body = self._checked_post(request)
        signame, signum = _signal_of(body)
        nodeset = self._targets(body)
        log.info("web %s: signal %s to every process on %s", request.remote, signame,
                 nodeset)
        group = self.ops.signal_all(nodeset, signum)
        outcomes = [o for name in group.succeeded for o in group.results[name]]
        text = render.signal_table(outcomes, f"SIG{signame}")
        return respond_json(start, 200, {
            "ok": group.ok and all(o.ok for o in outcomes), "text": text.text,
            "errors": render.failure_lines(group) + text.errors})

    def _run(self, request: Request, start: StartResponse) -> Any:
        _session, body = self._checked_post(request)
        nodeset = self._targets(body)
        command = body.get("command")
        if not isinstance(command, str) or not command.strip():
            raise HttpError(400, "give a command")
        timeout = body.get("timeout", 30)
        # JSON's true is Python's 1: a number only (json_body refuses NaN and Infinity).
        if type(timeout) not in (int, float) or not 0 < timeout <= RUN_TIMEOUT_MAX:
            raise HttpError(400, f"timeout must be a number of seconds up to "
                                 f"{RUN_TIMEOUT_MAX:g}")
        log.info("web %s: run %r on %s", request.remote, command, nodeset)
        group = self.ops.run(nodeset, command, float(timeout))
        report = render.run_report(group, color=False)
        return respond_json(start, 200, {
            "ok": group.ok and all(r.ok for r in group.results.values()),
            "text": report.text, "errors": report.errors})


def _signal_of(body: dict[str, Any]) -> tuple[str, int]:
    name = body.get("signal")
    if name not in SIGNALS:
        raise HttpError(400, f"signal must be one of {', '.join(SIGNALS)}")
    return name, SIGNALS[name]


def _number(text: str | None, what: str) -> int | None:
    if text is None:
        return None
    if not (text.isascii() and text.isdigit()):
        raise HttpError(400, f"{what} must be a whole number")
    return int(text)


class _Server(WSGIServer):
    def wrap_socket_and_handle(self, client_socket: Any, address: Any) -> Any:
        # The TLS handshake comes before _Handler's timeout: a peer that never starts it
        # would hold its place in the pool for good.
        client_socket.settimeout(SOCKET_TIMEOUT)
        try:
            tls_socket = self.wrap_socket(client_socket, **self.ssl_args)
        except OSError as exc:  # plain HTTP, a scanner, a stall: not worth a traceback
            log.info("web: no TLS handshake from %s: %s", address[0], exc)
            return None
        with contextlib.closing(tls_socket):
            return self.handle(tls_socket, address)


class _Handler(WSGIHandler):
    """A connection that sends nothing (or takes nothing of a stream) for SOCKET_TIMEOUT
    is closed: idle or stalled peers do not hold the pool's places."""

    _head_timer: Any = None

    def handle(self) -> None:
        self.socket.settimeout(SOCKET_TIMEOUT)
        try:
            super().handle()
        finally:
            self._stop_head_timer()

    # A peer sending a header byte every 59 s would pass every per-read timeout and hold its
    # place for ever: the whole head has a deadline, after which the connection is shut.
    def read_requestline(self) -> Any:
        self._stop_head_timer()
        self._head_timer = gevent.get_hub().loop.timer(HEAD_DEADLINE)
        self._head_timer.start(self._head_too_slow)
        return super().read_requestline()

    def read_request(self, raw_requestline: Any) -> Any:
        try:
            return super().read_request(raw_requestline)
        finally:
            self._stop_head_timer()

    def _head_too_slow(self) -> None:
        log.info("web: %s took over %.0f s to send a request head; closed",
                 self.client_address[0] if self.client_address else "?", HEAD_DEADLINE)
        with contextlib.suppress(OSError):
            self.socket.shutdown(socket.SHUT_RDWR)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.stop()
            self._head_timer.close()
            self._head_timer = None

    def _handle_client_error(self, ex: Exception) -> Any:
        # pywsgi prints a traceback for bad input other than a ValueError (more than 100
        # headers): the peer's fault, worth one line in the log, not the console.
        return super()._handle_client_error(ex if isinstance(ex, ValueError)
                                            else ValueError(str(ex)))


class _ErrorLog:
    """pywsgi's error log, into the master's log file."""

    def write(self, text: str) -> None:
        with contextlib.suppress(Exception):
            if text.strip():
                log.warning("web: %s", text.strip())

    def flush(self) -> None:
        pass
