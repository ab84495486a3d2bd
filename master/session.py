"""One authenticated client connection on the master: handshake, read loop, requests.

A session owns its socket. It runs the handshake, hands heartbeats to the registry, matches
replies to the requests in flight (several may be outstanding), and closes with one log
line that says why.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import socket
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gevent
import gevent.event
import gevent.lock
import gevent.socket

from common import PROTOCOL_VERSION, auth, frame_auth, tls, traffic_class
from common.calls import CallCancel, ForwardedCall
from common.errors import (
    AuthError,
    ConnectionClosed,
    CorralError,
    ErrorCode,
    ProtocolError,
    RemoteError,
)
from common.framing import FrameChannel, send_whole
from common.liveness import PING_EVERY
from common.messages import (
    Ack,
    Cancel,
    DataPort,
    ErrorFrame,
    FailReply,
    GetChunk,
    GetFile,
    GetFileEnd,
    Heartbeat,
    Hello,
    LinkLost,
    Message,
    Ping,
    PutProgress,
    Register,
    Reply,
    Welcome,
    decode,
    decode_as,
    error_code,
    heartbeat_is_well_formed,
)
from common.names import MAX_NAME, name_problem, printable_name
from common.procs import ProcExited
from common.replies import REPLY_TYPES
from common.text import peer_message, printable
from common.turns import Turns
from master.complaints import Complaints
from master.forwarded import ForwardedCalls
from master.registry import DuplicateName, Node

if TYPE_CHECKING:
    from master.server import MasterEngine

log = logging.getLogger("corral.master.session")

ACK_DELAY = 0.1  # seconds an exit-event ack may wait to cover later events too
# What the pinger sends between round-trip pings: an ack of no client run acknowledges
# nothing and asks no reply (see Session.ping).
KEEP_ALIVE = Ack(boot="", eseq=0).to_wire()


class Session:
    def __init__(self, sock: Any, address: tuple[str, int], engine: MasterEngine) -> None:
        self.sock = sock
        self.address = f"{address[0]}:{address[1]}"
        self.peer_host = address[0]  # as the node's peers reach it too, on a flat network
        self.engine = engine
        self.node: Node | None = None
        self._channel = FrameChannel(sock, engine.config.max_frame)
        self._write_lock = gevent.lock.Semaphore()
        # Requests in flight: the waiter, and the type their reply must have.
        self._pending: dict[int, tuple[gevent.event.AsyncResult, Any]] = {}
        self._sinks: dict[int, Callable[[Message], None]] = {}  # streamed replies, by req
        self._ack_due: tuple[str, int] | None = None
        self._request_ids = itertools.count(1)
        self._closed_reason: str | None = None
        self._claimed_name = "?"  # the name a peer gave before it was admitted
        self._boot: str | None = None  # the client run this connection belongs to
        self._complaints = Complaints(log)
        self._went_silent = False
        self.calls = ForwardedCalls(self)  # what processes of this node ask the master
        # The round-trip ping in flight (its request id and when it left), and when the
        # next is due: one pinger greenlet of the engine serves every session.
        self._ping_sent: tuple[int, float] | None = None
        self._ping_due = 0.0
        self._keep_alives = True  # False once the client says it watches the link itself
        self._rtt_every = 0.0
        self._rtt_due = 0.0  # when the next ping measures the round trip, not just keeps alive
        self._pinger: gevent.Greenlet | None = None

    @property
    def label(self) -> str:
        return f"{self.node.name} ({self.address})" if self.node else self.address

    # --- lifecycle ------------------------------------------------------------------------

    def run(self) -> None:
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        traffic_class.mark(self.sock, traffic_class.LOW_DELAY)
        reason = "connection closed by peer"
        try:
            with gevent.Timeout(self.engine.config.handshake_timeout, _HandshakeTimeout):
                if self.engine.tls_context is not None:
                    self._start_tls()
                self.node = self._handshake()
            now = time.monotonic()  # a first RTT figure at once, then when the pinger says
            self.engine.schedule_ping(self, self.ping(now, self.engine.rtt_every()))
            self._read_loop()
        except _HandshakeTimeout:
            reason = f"handshake timeout after {self.engine.config.handshake_timeout:g} s"
            self._send_error(ErrorCode.HANDSHAKE_TIMEOUT, reason)
        except (DuplicateName, BadName, AuthError) as exc:
            reason = exc.message
            self._send_error(exc.code, exc.message)
            self.engine.refused(self, self._claimed_name, exc.message)
        except ProtocolError as exc:
            reason = exc.message
            self._send_error(exc.code, exc.message)
        except RemoteError as exc:
            reason = f"peer reported: {exc.message}"
        except ConnectionClosed as exc:
            reason = exc.message
        except OSError as exc:
            reason = f"socket error: {exc.strerror or exc}"
        except Exception as exc:
            log.exception("internal error on %s", self.label)
            reason = f"internal error: {exc!r}"
        finally:
            self._finish(self._closed_reason or reason)

    def close(self, reason: str, silent: bool = False) -> None:
        """Close from outside the read loop (liveness gave up, replaced, shutting down).
        ``silent``: the node stopped answering, so a request still waiting had no reply
        (rather than lost a connection that was working)."""
        self._went_silent = silent
        if self._closed_reason is None:
            if not self._write_lock.locked():  # else a send is stuck: the node resends
                self._send_ack()  # a delayed ack still owed goes out first: nothing twice
            self._closed_reason = reason
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def _finish(self, reason: str) -> None:
        # Ended from the read loop too, not only by ``close``: the pinger (which may still
        # hold this session, weakly) and late requests then see it is over.
        self._closed_reason = reason
        if self._pinger is not None:
            self._pinger.kill(block=False)
        for result, _reply_type in self._pending.values():
            result.set_exception(
                CorralError(f"connection lost: {reason}", ErrorCode.DISCONNECTED)
            )
        self._pending.clear()
        self._complaints.summarise(self.label)
        log.info("closed %s: %s", self.label, reason)
        if self.node is not None:
            self.engine.registry.disconnected(self.node, self, reason)
        # After the node is GONE, so a barrier its processes waited at names it.
        self.calls.stop_all()
        with contextlib.suppress(OSError):
            self.sock.close()

    # --- handshake ------------------------------------------------------------------------

    def _fall_back(self, wrapped: Any, clear: Any) -> None:
        with contextlib.suppress(OSError):
            wrapped.close()
        self.sock = clear

    def _start_tls(self) -> None:
        # Wrapping takes the socket's descriptor over; a duplicate lets us still say in
        # clear why the connection is refused if TLS never gets going.
        clear = gevent.socket.socket(fileno=os.dup(self.sock.fileno()))
        wrapped = self.engine.tls_context.wrap_socket(
            self.sock, server_side=True, do_handshake_on_connect=False)
        self.sock = wrapped
        try:
            wrapped.do_handshake()
        except (ssl.SSLError, OSError) as exc:
            self._fall_back(wrapped, clear)
            raise AuthError("TLS handshake failed: "
                            + tls.describe_failure(exc, "master", "client")) from None
        except _HandshakeTimeout:
            # Most likely a client without TLS, waiting for our hello: tell it in clear.
            self._fall_back(wrapped, clear)
            raise AuthError(
                "TLS handshake failed: this master requires TLS and the client started none "
                f"within {self.engine.config.handshake_timeout:g} s (start the client with "
                f"{tls.ENABLE_HINT})") from None
        clear.close()
        self._channel = FrameChannel(self.sock, self.engine.config.max_frame)

    def _check_certificate_name(self, name: str) -> None:
        """With TLS a client's certificate is bound to its node name: a certificate made
        for one node does not let its holder register as another."""
        if self.engine.tls_context is None:
            return
        names = tls.certificate_names(self.sock.getpeercert() or {})
        if name not in names:
            shown = ", ".join(sorted(printable_name(n) for n in names)) or "no name"
            raise AuthError(f"certificate for {shown} presented by a node registering as "
                            f"{printable_name(name)} (make it one with: corral-master certs "
                            f"issue {name})")

    def _refuse_tls_client(self) -> None:
        """A client started with TLS opens with a TLS record, which read as a frame length
        would be a refusal for size that leaves everyone guessing: say what it is."""
        if tls.opens_tls(self.sock.recv(2, socket.MSG_PEEK)):
            raise ProtocolError(f"the client speaks TLS but this master does not (start "
                                f"the master with {tls.ENABLE_HINT}, or the client without "
                                "them)")

    def _handshake(self) -> Node:
        master_nonce = auth.new_nonce()
        self.send(Hello(version=PROTOCOL_VERSION, nonce=master_nonce))
        if self.engine.tls_context is None:
            self._refuse_tls_client()
        first = self._read_message()
        if isinstance(first, ErrorFrame):
            raise RemoteError(peer_message(first.message), error_code(first.code))
        if not isinstance(first, Register):
            raise ProtocolError(f"expected register, got {first.TAG}")
        self._claimed_name = printable(first.name[:MAX_NAME + 1])
        if first.version != PROTOCOL_VERSION:
            raise ProtocolError(
                f"protocol version {first.version} not supported (master speaks "
                f"{PROTOCOL_VERSION})",
                ErrorCode.VERSION_MISMATCH,
            )
        token = self.engine.token
        claimed = auth.register_claims(first.version, first.node_id, first.name, first.host,
                                       first.pid)
        if not auth.verify(auth.client_proof(token, master_nonce, first.nonce, claimed),
                           first.mac):
            raise AuthError(f"authentication failed for {printable_name(first.name)}: "
                            "wrong token")
        if (problem := name_problem(first.name)) is not None:
            raise BadName(problem)
        self._check_certificate_name(first.name)
        node = self.engine.registry.admit(first, self)
        self._keep_alives = not first.watches_link
        heartbeat = self.engine.config.heartbeat
        welcome = Welcome(mac=auth.master_proof(token, master_nonce, first.nonce,
                                                auth.welcome_claims(heartbeat)),
                          heartbeat=heartbeat)
        keys = frame_auth.session_keys(token, master_nonce, first.nonce)
        with self._write_lock:  # nothing may be sent between the welcome and the switch
            send_whole(self.sock, self._channel.frame(welcome.to_wire()))
            self._channel.authenticate(sending_key=keys.master_to_client,
                                       receiving_key=keys.client_to_master,
                                       keep_sending_cipher=False)
        log.info("registered %s id=%s host=%s", first.name, printable(first.node_id),
                 printable(first.host))
        return node

    # --- traffic --------------------------------------------------------------------------

    def send(self, message: Message) -> None:
        with self._write_lock:  # frames are numbered: made and sent in one order
            send_whole(self.sock, self._channel.frame(message.to_wire()))

    def _send_error(self, code: ErrorCode, text: str) -> None:
        try:
            with gevent.Timeout(1):
                self.send(ErrorFrame(code=int(code), message=text))
        except (OSError, gevent.Timeout):
            pass

    def _read_message(self) -> Message:
        return decode(self._channel.read())

    def _read_loop(self) -> None:
        node = self.node
        assert node is not None
        heartbeat = self.engine.registry.heartbeat
        read_frame = self._channel.reader.read_frame  # the channel is settled by now
        turns = Turns(gevent.sleep)  # one busy peer must not starve the others
        while True:
            wire = read_frame()
            turns.take()
            # Nearly every frame a master reads is a heartbeat: those take a straight path,
            # checked by the same rules as any message and kept as their map.
            if heartbeat_is_well_formed(wire):
                heartbeat(node, wire)
            else:
                self._dispatch(node, decode(wire))

    def _dispatch(self, node: Node, message: Message) -> None:
        # A reply whose request was cancelled or timed out finds no waiter and is dropped.
        if isinstance(message, Reply):
            if (waiting := self._pending.pop(message.req, None)) is not None:
                self._deliver(waiting, message.value)
            elif self._ping_sent is not None and message.req == self._ping_sent[0]:
                self._pong(message)
        elif isinstance(message, Heartbeat):
            self.engine.registry.heartbeat(node, message.to_wire())
        elif isinstance(message, FailReply):
            if (waiting := self._pending.pop(message.req, None)) is not None:
                waiting[0].set_exception(RemoteError(peer_message(message.message),
                                                     error_code(message.code)))
        elif isinstance(message, (GetFile, GetChunk, GetFileEnd, PutProgress, LinkLost)):
            sink = self._sinks.get(message.req)
            if sink is not None:  # else: the pull was cancelled; drop the rest
                sink(message)
        elif isinstance(message, DataPort):
            node.data_address = (self.peer_host, message.port)
        elif isinstance(message, ProcExited):
            self._on_exit(message)
        elif isinstance(message, ForwardedCall):
            self.calls.start(node, message)
        elif isinstance(message, CallCancel):
            self.calls.cancel(message.req)
        elif isinstance(message, ErrorFrame):
            raise RemoteError(peer_message(message.message), error_code(message.code))
        else:
            raise ProtocolError(f"unexpected {message.TAG} from a client")

    @staticmethod
    def _deliver(waiting: tuple[gevent.event.AsyncResult, Any], value: Any) -> None:
        """Hand a reply's value, checked against its request's reply type, to its waiter.
        A value of the wrong shape is this request's protocol error, and the connection's."""
        result, reply_type = waiting
        try:
            result.set(decode_as(reply_type, value))
        except ProtocolError as exc:
            result.set_exception(CorralError(f"protocol error: {exc.message}",
                                             ErrorCode.PROTOCOL))
            raise

    def _register(self, req: int, message: Message) -> gevent.event.AsyncResult:
        result = gevent.event.AsyncResult()
        self._pending[req] = (result, REPLY_TYPES[type(message)])
        return result

    def _on_exit(self, event: ProcExited) -> None:
        assert self.node is not None
        # One connection is one client process, and a client's boot id is fixed for its
        # life: another boot on the same connection is made up.
        if self._boot is None:
            self._boot = event.boot
        elif event.boot != self._boot:
            self._complaints.note(self.label, "exit event with another boot id on the same "
                                  "connection, dropped", printable(event.boot[:64]))
            return
        self.engine.exits.on_exit(self.node, event)  # a repeat after a reconnect is dropped
        self._acknowledge_soon(event.boot, event.eseq)

    def request(self, make: Callable[[int], Message], timeout: float) -> Any:
        """Send the request ``make(req_id)`` and wait for its reply's value, checked
        against the type that request's reply must have."""
        if self._closed_reason is not None:
            raise CorralError(f"{self.label}: not connected", ErrorCode.DISCONNECTED)
        req = next(self._request_ids)
        message = make(req)
        result = self._register(req, message)
        sent = time.monotonic()
        metrics = self.engine.metrics
        try:
            self.send(message)
            value = result.get(timeout=timeout)
            metrics.request_done(message.TAG, time.monotonic() - sent)
            return value
        except gevent.Timeout:
            metrics.request_timed_out(message.TAG)
            raise CorralError(f"no reply within {timeout:g} s", ErrorCode.NO_REPLY) from None
        except CorralError as exc:
            if exc.code is ErrorCode.DISCONNECTED and self._went_silent:
                raise CorralError(f"no reply within {time.monotonic() - sent:.0f} s "
                                  f"({self._closed_reason}; the node was dropped)",
                                  ErrorCode.NO_REPLY) from None
            raise
        except OSError as exc:
            raise CorralError(f"connection lost: {exc.strerror or exc}",
                              ErrorCode.DISCONNECTED) from None
        finally:
            self._pending.pop(req, None)

    def _acknowledge_soon(self, boot: str, eseq: int) -> None:
        """Acks are cumulative and a little delayed, like TCP's: a burst of exit events
        costs one ack, not one each."""
        pending = self._ack_due is not None
        self._ack_due = (boot, eseq)
        if not pending:
            gevent.spawn_later(ACK_DELAY, self._send_ack)

    def _send_ack(self) -> None:
        due, self._ack_due = self._ack_due, None
        if due is not None and self._closed_reason is None:
            with contextlib.suppress(OSError):
                self.send(Ack(boot=due[0], eseq=due[1]))

    def begin(self, make: Callable[[int], Message],
              sink: Callable[[Message], None] | None = None
              ) -> tuple[int, gevent.event.AsyncResult]:
        """Send the first frame of a long request; its reply resolves the AsyncResult, and
        frames the client streams for it go to ``sink``. End with ``end``."""
        if self._closed_reason is not None:
            raise CorralError(f"{self.label}: not connected", ErrorCode.DISCONNECTED)
        req = next(self._request_ids)
        message = make(req)
        result = self._register(req, message)
        if sink is not None:
            self._sinks[req] = sink
        self.send(message)
        return req, result

    def end(self, req: int, cancel: bool) -> None:
        """Forget request ``req``; with ``cancel``, tell the client to stop working on it."""
        self._pending.pop(req, None)
        self._sinks.pop(req, None)
        if cancel and self._closed_reason is None:
            with contextlib.suppress(OSError):
                self.send(Cancel(req=req))

    def ping(self, now: float, rtt_every: float) -> float | None:
        """Send the round-trip ping if it is due (every ``rtt_every`` seconds), else a
        keep-alive if that is due (every PING_EVERY heartbeat intervals).

        Each node hears from the master at least every PING_EVERY intervals: a client
        whose kernel cannot tell it whether the link is alive judges it by that. With
        thousands of nodes the engine spaces the round trips out, and in between the frame
        is ``KEEP_ALIVE``, which asks no reply: a reply costs the master a wake-up and a
        frame to read, as much as a heartbeat.

        Returns when to call again (None: never, the session is over). The caller (one
        pinger for all sessions, which calls only the sessions due) never waits. When
        nothing else is being sent, a frame of a few dozen bytes goes out from here at
        once; otherwise, or when the socket takes only part of it, a short-lived greenlet
        sends it (a greenlet per ping cost as much as the rest of the pinging at 10,000
        nodes). No new frame while the last is still stuck behind a peer that does not
        read."""
        if self.node is None or self._closed_reason is not None:
            return None
        if now < self._ping_due:
            return self._ping_due
        if self._pinger is not None:  # the last frame is still on its way
            return now + self.engine.config.heartbeat
        self._ping_due = now + self.engine.config.heartbeat * PING_EVERY
        measure = now >= self._rtt_due
        if measure:
            self._rtt_due = now + rtt_every
            self._rtt_every = rtt_every
        elif not self._keep_alives:
            self._ping_due = self._rtt_due  # this client needs nothing until the next ping
            return self._ping_due
        if self._write_lock.locked() or self.engine.tls_context is not None:
            self._pinger = gevent.spawn(self._send_ping, measure)
            return self._ping_due
        self._write_lock.acquire()  # free: taking it does not wait
        try:
            frame = self._ping_frame(measure)
            sent = self.sock.send(frame, 0, 0.0)  # timeout 0: never waits
        except BlockingIOError:
            sent = 0
        except OSError:
            self._write_lock.release()
            return self._ping_due
        if sent == len(frame):
            self._write_lock.release()
        else:  # the rest must follow before any other frame: still under the lock
            self._pinger = gevent.spawn(self._send_rest, frame[sent:])
        return self._ping_due

    def _ping_frame(self, measure: bool) -> bytes:
        """The next frame of the pinger: a ping that measures the round trip, or the
        keep-alive. Made under the write lock (frames are numbered)."""
        if not measure:
            return self._channel.frame(KEEP_ALIVE)
        req = next(self._request_ids)
        self._ping_sent = (req, time.perf_counter())
        next_in = 0.0 if self._keep_alives else self._rtt_every
        return self._channel.frame(Ping(req=req, next_in=next_in).to_wire())

    def _send_ping(self, measure: bool) -> None:
        try:
            with contextlib.suppress(OSError), self._write_lock:
                send_whole(self.sock, self._ping_frame(measure))
        finally:
            self._pinger = None  # a finished greenlet kept per session is 1 KiB each

    def _send_rest(self, rest: bytes) -> None:
        try:
            with contextlib.suppress(OSError):
                send_whole(self.sock, rest)
        finally:
            self._write_lock.release()
            self._pinger = None

    def _pong(self, reply: Reply) -> None:
        assert self._ping_sent is not None and self.node is not None
        decode_as(REPLY_TYPES[Ping], reply.value)  # a ping's reply carries nothing
        self.node.rtt_ms = (time.perf_counter() - self._ping_sent[1]) * 1000
        self._ping_sent = None


class BadName(ProtocolError):
    code = ErrorCode.BAD_NAME


class _HandshakeTimeout(Exception):
    pass
