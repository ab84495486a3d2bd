"""The client daemon's connection: connect, authenticate, heartbeat, serve requests, and
reconnect with capped exponential back-off whenever the master goes away."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import random
import socket
import ssl
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import gevent.lock
import gevent.pool
import gevent.queue
import gevent.socket
import gevent.ssl

from client import metrics
from client.chain import DataLinks, LinkSinks
from client.files import Uploads, stream_out
from client.protocol import Identity, handshake, send_error_quietly
from client.sandbox import Sandbox
from common import tcp_probe, tls, traffic_class
from common.calls import CallCancel, CallError, CallItem, CallResult, ForwardedCall
from common.errors import ConnectionClosed, CorralError, ErrorCode, ProtocolError, RemoteError
from common.framing import DEFAULT_MAX_FRAME, FrameChannel, send_parts
from common.landing import PartialLedger
from common.liveness import PING_EVERY, UNACKNOWLEDGED_INTERVALS
from common.messages import (
    Ack,
    Cancel,
    DataPort,
    ErrorFrame,
    FailReply,
    GetRequest,
    Message,
    Ping,
    PutBegin,
    PutChunk,
    PutEnd,
    PutEntry,
    Reply,
    decode,
    error_code,
)
from common.procs import ProcExited, ProcInfo
from common.text import peer_message
from common.tls import TlsFiles
from common.turns import Turns

log = logging.getLogger("corral.client")

BACKOFF_FIRST = 0.1
BACKOFF_CAP = 5.0
CONNECT_TIMEOUT = 5.0
HANDSHAKE_TIMEOUT = 10.0
Handler = Callable[[Any], Any]
CALL_BACKLOG = 64  # items of a forwarded call waiting for its process to read them


@dataclasses.dataclass(frozen=True)
class ClientConfig:
    master: tuple[str, int]
    name: str
    workdir: Path
    log_dir: Path
    state_dir: Path
    max_frame: int = DEFAULT_MAX_FRAME
    tls: TlsFiles | None = None
    data_port: int = 0  # where other nodes open data links (0: any free port)
    data_host: str = ""  # the address it listens on ("": every address)


class Backoff:
    """Exponential back-off with full jitter, capped: a restarted master is not stampeded."""

    def __init__(self, first: float = BACKOFF_FIRST, cap: float = BACKOFF_CAP) -> None:
        self.first, self.cap = first, cap
        self._attempt = 0

    def reset(self) -> None:
        self._attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.first * (2**self._attempt))
        self._attempt += 1
        return random.uniform(ceiling / 2, ceiling)


class ClientDaemon:
    def __init__(self, config: ClientConfig, identity: Identity, token: bytes,
                 handlers: dict[type[Message], Handler],
                 running_processes: Callable[[], int], sandbox: Sandbox) -> None:
        self.config = config
        self.sandbox = sandbox
        self.identity = identity
        self.links = DataLinks(identity.name, token, config.tls, config.max_frame)
        self.token = token
        self.handlers = handlers
        self.running_processes = running_processes
        self._stopping = gevent.event.Event()
        self._connection: _Connection | None = None
        # Exit events wait here until the master acknowledges them, across reconnects.
        self.boot = uuid.uuid4().hex
        self._event_seq = 0
        self.outbox: dict[int, ProcExited] = {}
        self._ended: list[ProcInfo] = []
        self._tls_context: Any = None
        self.call_ids = itertools.count(1)  # calls forwarded for processes, never reused
        self.data_port = 0  # 0 until listen_for_links
        self.master_fingerprint = ""  # of the certificate the master showed, with TLS
        # Temporary files of copies in progress; a killed client removes them at start.
        self.partials = PartialLedger(config.state_dir / "partial-files")
        for leftover in self.partials.sweep():
            log.info("removed %s, left by a copy that was interrupted", leftover)
        if config.tls is not None:
            self._tls_context = tls.configure(
                gevent.ssl.SSLContext(gevent.ssl.PROTOCOL_TLS_CLIENT), config.tls)

    def forwarder(self) -> _Connection | None:
        """The connection that forwards calls of processes to the master, if one is up."""
        connection = self._connection
        return connection if connection is not None and connection.authenticated else None

    @property
    def token(self) -> bytes:
        return self.links.token

    @token.setter
    def token(self, value: bytes) -> None:
        self.links.token = value  # the ticket gate checks with the token in use

    def listen_for_links(self) -> int:
        """Open the data port; the port number, which the master learns at registration."""
        self.data_port = self.links.listen(self.config.data_host, self.config.data_port)
        return self.data_port

    @property
    def tls_enabled(self) -> bool:
        return self._tls_context is not None

    def publish_change(self, info: ProcInfo) -> None:
        """Queue an exit (or a stop, or a continue); every change one reaping pass finds
        travels in one event."""
        if not self._ended:
            gevent.get_hub().loop.run_callback(self._flush_exits)
        self._ended.append(info)

    def _flush_exits(self) -> None:
        self._event_seq += 1
        event = ProcExited(boot=self.boot, eseq=self._event_seq, procs=self._ended)
        self._ended = []
        self.outbox[event.eseq] = event
        connection = self._connection
        if connection is not None and connection.authenticated:
            connection.send_soon(event)  # (a loop callback: it must not block)

    def acknowledged(self, ack: Ack) -> None:
        """An ack covers every event up to its ``eseq`` (they arrive in order)."""
        if ack.boot == self.boot:
            for eseq in [e for e in self.outbox if e <= ack.eseq]:
                del self.outbox[eseq]

    def stop(self) -> None:
        """No more connections: ``run_forever`` returns once the current one ends (the
        caller ends it at once by killing the greenlet that runs ``run_forever``)."""
        self._stopping.set()

    def run_forever(self) -> None:
        backoff = Backoff()
        host, port = self.config.master
        failures = 0
        while not self._stopping.is_set():
            try:
                sock = gevent.socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
            except OSError as exc:
                # Say it once, then only now and then: a master may be away for hours.
                level = logging.INFO if failures % 60 == 0 else logging.DEBUG
                log.log(level, "cannot reach master %s:%d: %s (retrying)", host, port,
                        exc.strerror or exc)
                failures += 1
            else:
                failures = 0
                if self._tls_context is not None:
                    sock = self._start_tls(sock, host)
                    if sock is None:
                        self._stopping.wait(backoff.next_delay())
                        continue
                self._connection = _Connection(self, sock)
                if self._connection.run():
                    backoff.reset()
                self._connection = None
            delay = backoff.next_delay()
            self._stopping.wait(delay)


    def _start_tls(self, sock: Any, host: str) -> Any:
        """Wrap ``sock`` in TLS, verifying the master; None (logged) if that fails."""
        try:
            wrapped = self._tls_context.wrap_socket(sock, server_hostname=host,
                                                    do_handshake_on_connect=False)
            wrapped.settimeout(HANDSHAKE_TIMEOUT)
            wrapped.do_handshake()
            self.master_fingerprint = tls.der_fingerprint(wrapped.getpeercert(True))
            return wrapped
        except (ssl.SSLError, OSError) as exc:
            if tls.peer_not_tls(exc):
                log.warning("TLS handshake with master %s failed: the master does not speak "
                            "TLS but this client does (start the master with %s, or this "
                            "client without them)", host, tls.ENABLE_HINT)
            else:
                log.warning("TLS handshake with master %s failed: %s", host,
                            tls.describe_failure(exc, "client", "master"))
            sock.close()
            return None


class _Connection:
    """One connection to the master, from handshake to close."""

    def __init__(self, daemon: ClientDaemon, sock: Any) -> None:
        self.daemon = daemon
        self.sock = sock
        self.channel = FrameChannel(sock, daemon.config.max_frame)
        self._write_lock = gevent.lock.Semaphore()
        self._workers = gevent.pool.Group()
        self.authenticated = False
        self.uploads = Uploads(daemon.sandbox, daemon.partials, daemon.links,
                               self.send_quietly)
        self._in_flight: dict[int, gevent.Greenlet] = {}
        self._calls: dict[int, gevent.queue.Queue[Any]] = {}  # forwarded, by req
        self._queued: list[Message] = []  # for send_soon
        self.last_heard = time.monotonic()
        self.ping_gap = 0.0  # what the master's last ping said of the next (Ping.next_in)

    def run(self) -> bool:
        """Serve until the connection ends; True if the handshake had succeeded."""
        daemon = self.daemon
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        traffic_class.mark(self.sock, traffic_class.LOW_DELAY)
        try:
            self.sock.settimeout(HANDSHAKE_TIMEOUT)
            welcome = handshake(self.channel, daemon.identity, daemon.token)
            self.sock.settimeout(None)
            self.authenticated = True
            log.info(
                "registered with master %s:%d as %s (id %s)%s",
                *daemon.config.master,
                daemon.identity.name,
                daemon.identity.node_id,
                f", TLS, master certificate SHA-256 {daemon.master_fingerprint}"
                if daemon.tls_enabled else "",
            )
            if daemon.data_port:
                # Before the first heartbeat: the node is ready only with its data port known.
                self.send(DataPort(port=daemon.data_port))
                daemon.links.sinks = LinkSinks(self.uploads.attach, self.uploads.from_link,
                                               self.uploads.link_lost)
            self._workers.spawn(self._heartbeat_loop, welcome.heartbeat)
            self._workers.spawn(self._watch_master, welcome.heartbeat, gevent.getcurrent())
            # What ended while we were away, oldest first, all under the lock: an exit queued
            # meanwhile by send_soon must not overtake them (the master drops an event not
            # numbered above the last it saw). What is queued now is in the outbox too.
            with self._write_lock:
                self._queued.clear()
                send_parts(self.sock, self._frame_parts(list(daemon.outbox.values())))
            self._serve()
        except (RemoteError, MasterSilent) as exc:
            log.warning("%s", exc.message)
        except (ProtocolError, CorralError) as exc:
            if isinstance(exc, ConnectionClosed):
                log.info("master %s:%d closed the connection", *daemon.config.master)
            else:
                log.warning("closing connection to master: %s", exc.message)
                if exc.code is not ErrorCode.AUTH_FAILED:
                    self._say_why(exc)
        except TimeoutError:
            hint = "" if daemon.tls_enabled else (" (a master that requires TLS says nothing "
                                                  "to a client without it)")
            log.warning("master did not complete the handshake in %g s%s", HANDSHAKE_TIMEOUT,
                        hint)
        except ssl.SSLError as exc:
            # With TLS 1.3 the master checks our certificate after our side is done, so its
            # refusal arrives here, as an alert.
            log.warning("TLS with master %s:%d failed: %s", *daemon.config.master,
                        tls.describe_failure(exc, "client", "master"))
        except OSError as exc:
            log.info("connection to master lost: %s", exc.strerror or exc)
        finally:
            self._workers.kill(block=False)
            daemon.links.sinks = None
            self.uploads.abort_all()
            self.sock.close()
            for answers in self._calls.values():
                answers.put(None)  # the calls in flight are lost: say so to their callers
        return self.authenticated

    # --- calls forwarded for the processes of this node (client.jobsocket) ----------------

    def forward(self, op: str, args: dict[str, Any], pid: int, ref: str, job: str
                ) -> tuple[int, gevent.queue.Queue[Any]]:
        req = next(self.daemon.call_ids)
        answers: gevent.queue.Queue[Any] = gevent.queue.Queue()
        self._calls[req] = answers
        self.send(ForwardedCall(req=req, op=op, args=args, pid=pid, ref=ref, job=job))
        return req, answers

    def cancel_call(self, req: int) -> None:
        if req in self._calls:
            self.send_quietly(CallCancel(req=req))

    def end_call(self, req: int) -> None:
        self._calls.pop(req, None)

    def _answer_call(self, answer: CallItem | CallResult | CallError) -> None:
        answers = self._calls.get(answer.req)
        if answers is None:
            return  # its caller went: drop what is left
        if isinstance(answer, CallItem) and answers.qsize() >= CALL_BACKLOG:
            # The caller reads slower than the master streams (a log followed): stop the
            # call rather than hold its stream in this client's memory.
            self._calls.pop(answer.req)
            self.send_quietly(CallCancel(req=answer.req))
            answers.put(CallError(req=answer.req, code=int(ErrorCode.CANCELLED), message=(
                f"stopped: the calling process read too slowly ({CALL_BACKLOG} items waited "
                "for it)")))
            return
        answers.put(answer)

    def send(self, message: Message) -> None:
        """Send ``message`` now, after whatever ``send_soon`` queued, in one write."""
        with self._write_lock:  # frames are numbered: made and sent in one order
            send_parts(self.sock, self._frame_parts([message]))

    def send_soon(self, message: Message) -> None:
        """Queue ``message``; a greenlet sends the queue, unless another send takes it along
        first. Safe in a loop callback, which must never wait on the socket or the write
        lock; and an exit event queued this way leaves in the same write as the reply of
        the ``run`` it ends."""
        self._queued.append(message)
        if len(self._queued) == 1:
            gevent.get_hub().loop.run_callback(self._start_sender)

    def _start_sender(self) -> None:
        # By now a greenlet that woke in the same turn (a run's, with its reply) may have
        # taken the queue along; a new greenlet (and its stack) only for what is left.
        if self._queued:
            self._workers.spawn(self._send_queued)

    def _send_queued(self) -> None:
        with self._write_lock, contextlib.suppress(OSError):
            if self._queued:
                send_parts(self.sock, self._frame_parts([]))

    def _frame_parts(self, messages: list[Message]) -> list[bytes | memoryview]:
        """The queued messages and then ``messages``, framed (hold the write lock): a log
        or file chunk stays in the buffer it was read into (``FrameWriter.frame_parts``)."""
        if self._queued:
            messages, self._queued = self._queued + messages, []
        parts: list[bytes | memoryview] = []
        small: list[bytes] = []  # frames with no bulk, joined: a burst of exit events
        for message in messages:
            framed = self.channel.writer.frame_parts(message.to_wire())
            if len(framed) == 1 and isinstance(framed[0], bytes):
                small.append(framed[0])
                continue
            if small:
                parts.append(b"".join(small))
                small = []
            parts.extend(framed)
        if small:
            parts.append(b"".join(small))
        return parts

    def _say_why(self, exc: CorralError) -> None:
        """Tell the master why we close, through the lock once other greenlets send too."""
        if self.authenticated:
            self.send_quietly(ErrorFrame(code=int(exc.code), message=exc.message))
        else:
            send_error_quietly(self.channel, exc.code, exc.message)

    def send_quietly(self, message: Message) -> None:
        with contextlib.suppress(OSError):
            self.send(message)

    def _heartbeat_loop(self, interval: float) -> None:
        seq = 0
        workdir = self.daemon.config.workdir
        while True:
            seq += 1
            beat = metrics.heartbeat(seq, workdir, self.daemon.running_processes())
            try:
                self.send(beat)
            except OSError:
                return  # the read loop notices the broken socket and reconnects
            gevent.sleep(interval)

    def _watch_master(self, interval: float, reader: gevent.Greenlet) -> None:
        """Notice a dead link or master host, which no socket error reports (a cable pulled,
        a link taken down: TCP alone retries for many minutes). The kernel knows: our
        heartbeats go out every interval, and a live host acknowledges them at once,
        whatever its master process is doing. A master that is merely stopped or busy is
        waited for: a new connection would wait for it all the same. Where the kernel does
        not say, silence longer than the master's pings allow decides."""
        unacknowledged_limit = UNACKNOWLEDGED_INTERVALS * interval
        silence_limit = (PING_EVERY + UNACKNOWLEDGED_INTERVALS) * interval
        host, port = self.daemon.config.master
        waiting_said = False
        while True:
            gevent.sleep(interval)
            silent = time.monotonic() - self.last_heard
            unacknowledged = tcp_probe.unacknowledged_for(self.sock)
            if unacknowledged is not None and unacknowledged >= unacknowledged_limit:
                why = (f"nothing this client sent to master {host}:{port} was acknowledged "
                       f"for {unacknowledged:.1f} s")
            elif unacknowledged is None and silent >= silence_limit:
                why = f"nothing from master {host}:{port} for {silent:.1f} s"
            else:
                # A master that sends this client no keep-alives (it watches the link
                # itself) may be silent until the next ping it announced.
                quiet_allowed = max(silence_limit,
                                    self.ping_gap + UNACKNOWLEDGED_INTERVALS * interval)
                if silent < quiet_allowed:
                    waiting_said = False
                elif not waiting_said:
                    log.warning("nothing from master %s:%d for %.1f s, but its host "
                                "acknowledges what this client sends: the master is busy or "
                                "stopped; waiting for it", host, port, silent)
                    waiting_said = True
                continue
            reader.kill(MasterSilent(f"{why}: the link or the master's host is down; "
                                     "reconnecting"), block=False)
            return

    def _serve(self) -> None:
        handlers: dict[type[Message], Handler] = {
            **self.daemon.handlers,
            GetRequest: lambda request: stream_out(self.daemon.sandbox, request, self.send),
        }
        turns = Turns(gevent.sleep)
        while True:
            message = decode(self.channel.read())
            self.last_heard = time.monotonic()
            if isinstance(message, Ping):
                self.ping_gap = message.next_in
            turns.take()
            if isinstance(message, (PutBegin, PutEntry, PutChunk, PutEnd)):
                # In order, in this greenlet: a push's frames must not overtake each other.
                reply = self.uploads.handle(message)
                if reply is not None:
                    self.send(reply)
                continue
            if isinstance(message, Ack):
                self.daemon.acknowledged(message)
                continue
            if isinstance(message, (CallItem, CallResult, CallError)):
                self._answer_call(message)
                continue
            if isinstance(message, Cancel):
                self._cancel(message.req)
                continue
            if isinstance(message, ErrorFrame):
                raise RemoteError(f"master closed the session: {peer_message(message.message)}",
                                  error_code(message.code))
            handler = handlers.get(type(message))
            if handler is None:
                raise ProtocolError(f"unexpected {message.TAG} from the master")
            worker = self._workers.spawn(self._answer, handler, message)
            self._in_flight[message.req] = worker  # type: ignore[attr-defined]

    def _cancel(self, req: int) -> None:
        self.uploads.cancel(req)
        worker = self._in_flight.pop(req, None)
        if worker is not None:
            never_ran = worker.gr_frame is None and not worker.dead
            worker.kill(block=False)
            if never_ran:  # killed before it began: it cannot answer, so say it here
                self.send_quietly(FailReply(req=req, code=int(ErrorCode.CANCELLED),
                                            message="cancelled before it started"))

    def _answer(self, handler: Handler, request: Any) -> None:
        try:
            reply: Message = Reply(req=request.req, value=handler(request))
        except CorralError as exc:
            reply = FailReply(req=request.req, code=int(exc.code), message=exc.message)
        except Exception as exc:
            log.exception("request %s failed", request.TAG)
            reply = FailReply(req=request.req, code=int(ErrorCode.INTERNAL), message=repr(exc))
        finally:
            self._in_flight.pop(request.req, None)
        self.send_quietly(reply)


class MasterSilent(CorralError):
    code = ErrorCode.DISCONNECTED
