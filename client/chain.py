"""Node-to-node data links for chained copies (docs/chain-design.md).

Each client listens on its data port. A node in the middle of a chain opens a link to the
next node with the one-time ticket the master gave it, and forwards every frame of the copy
over it before writing the frame itself. The receiver admits a link only with a ticket the
master signed for exactly that transfer, sender and receiver, not yet used nor expired, and
only once the master has told it, over its own connection, which node to expect. After the
ticket both ends MAC every frame (keys from the token and both nonces), and with TLS the
link is TLS too, each end showing its node certificate. The sandbox is the receiving
node's own: a link only feeds a copy the master started there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

import gevent
import gevent.server
import gevent.socket
import gevent.ssl

from common import auth, frame_auth, tls, traffic_class
from common.errors import AuthError, CorralError, ErrorCode, ProtocolError
from common.framing import FrameChannel
from common.messages import (
    ErrorFrame,
    LinkTicket,
    LinkWelcome,
    NextHop,
    PutChunk,
    PutEnd,
    PutEntry,
    decode,
)
from common.text import peer_message
from common.tickets import NotAnnounced, Ticket, TicketGate
from common.tls import TlsFiles
from common.turns import Turns

log = logging.getLogger("corral.client.chain")

LINK_STALL = 30.0  # seconds a next node may accept nothing, unless the master says
CONNECT_TIMEOUT = 5.0
HANDSHAKE_TIMEOUT = 10.0
ANNOUNCE_WAIT = 10.0  # how long a sound ticket may wait for the master's announcement
_ANNOUNCE_POLL = 0.02
_LINK_SALT = b"corral-v2 data link"

StreamFrame = PutEntry | PutChunk | PutEnd


def _link_keys(token: bytes, ticket_nonce: str, receiver_nonce: bytes
               ) -> frame_auth.SessionKeys:
    """``master_to_client`` is the sender's direction, ``client_to_master`` the
    receiver's; the salt keeps them apart from any master connection's keys."""
    return frame_auth.session_keys(token, _LINK_SALT + bytes.fromhex(ticket_nonce),
                                   receiver_nonce)


class Relay:
    """The sending end of one data link: connects (in the background, while the copy
    starts) and forwards frames. Its first failure is kept in ``error``; from then on it
    forwards nothing, and this node carries on with its own copy."""

    def __init__(self, hop: NextHop, token: bytes, context: ssl.SSLContext | None,
                 max_frame: int, stall: float) -> None:
        self.node = hop.ticket.receiver
        self.stall = stall
        self.error: str | None = None
        self._sock: Any = None
        self._channel: FrameChannel | None = None
        self._connecting = gevent.spawn(self._connect, hop, token, context, max_frame)

    def _connect(self, hop: NextHop, token: bytes, context: ssl.SSLContext | None,
                 max_frame: int) -> None:
        try:
            sock = gevent.socket.create_connection((hop.host, hop.port),
                                                   timeout=CONNECT_TIMEOUT)
            self._sock = sock
            traffic_class.mark(sock, traffic_class.BULK)
            if context is not None:
                # The receiver's certificate must name the node the master sent us to.
                sock = context.wrap_socket(sock, server_hostname=self.node)
                self._sock = sock
            sock.settimeout(HANDSHAKE_TIMEOUT)
            channel = FrameChannel(sock, max_frame)
            channel.send(hop.ticket.to_wire())
            answer = decode(channel.read())
            if isinstance(answer, ErrorFrame):
                raise AuthError(f"refused: {peer_message(answer.message)}")
            if not isinstance(answer, LinkWelcome):
                raise ProtocolError(f"expected lwelcome, got {answer.TAG}")
            keys = _link_keys(token, hop.ticket.nonce, answer.nonce)
            channel.authenticate(sending_key=keys.master_to_client,
                                 receiving_key=keys.client_to_master)
            sock.settimeout(None)
            self._channel = channel
        except ssl.SSLError as exc:
            self._fail("TLS: " + tls.describe_failure(exc, "node", "next node"))
        except CorralError as exc:
            self._fail(exc.message)
        except OSError as exc:
            self._fail(f"cannot connect to {hop.host}:{hop.port}: {exc.strerror or exc}")

    def forward(self, message: StreamFrame) -> bool:
        """Send one frame on; False once the link has failed."""
        if self.error is None:
            self._connecting.join()
        if self.error is not None or self._channel is None:
            return False
        try:
            # Plain sendall, unlike the master links' send_whole: a frame cut short by the
            # timeout goes nowhere, since a link that stalled is closed at once.
            with gevent.Timeout(self.stall, _Stalled()):
                self._sock.sendall(self._channel.frame(message.to_wire()))
        except _Stalled:
            self._fail(f"accepted nothing for {self.stall:g} s")
        except OSError as exc:
            self._fail(f"connection lost: {exc.strerror or exc}")
        return self.error is None

    def _fail(self, reason: str) -> None:
        if self.error is None:
            self.error = reason
        self.close()

    def close(self) -> None:
        self._connecting.kill(block=False)
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()


class _Stalled(Exception):
    pass


@dataclasses.dataclass
class Inbound:
    """An admitted link: the transfer it feeds and its socket, to close if the copy is
    dropped while data still comes."""

    transfer: str
    sock: Any


LinkSink = Callable[[str, StreamFrame], bool]  # (transfer, frame) -> the stream ended
AttachSink = Callable[[Inbound], bool]  # a link for a copy in progress here (False: none)
LostSink = Callable[[str, str], None]  # (transfer, why the link ended early)


@dataclasses.dataclass
class LinkSinks:
    """Where an admitted link's frames go: the uploads of the current master connection."""

    attach: AttachSink
    frame: LinkSink
    lost: LostSink


class DataLinks:
    """This node's data port and its side of every data link: the ticket gate, relays to
    next nodes, and the server that admits links from previous ones."""

    def __init__(self, me: str, token: bytes, tls_files: TlsFiles | None, max_frame: int
                 ) -> None:
        self.gate = TicketGate(token, me)
        self.max_frame = max_frame
        self.sinks: LinkSinks | None = None  # set while a master connection is up
        self._server: gevent.server.StreamServer | None = None
        self._client_context: ssl.SSLContext | None = None
        self._server_context: ssl.SSLContext | None = None
        if tls_files is not None:
            self._client_context = tls.configure(
                gevent.ssl.SSLContext(gevent.ssl.PROTOCOL_TLS_CLIENT), tls_files)
            self._server_context = tls.configure(
                gevent.ssl.SSLContext(gevent.ssl.PROTOCOL_TLS_SERVER), tls_files)

    @property
    def token(self) -> bytes:
        return self.gate.token

    @token.setter
    def token(self, value: bytes) -> None:
        self.gate.token = value

    def listen(self, host: str, port: int) -> int:
        """Start accepting links; the port actually bound (``port`` 0: any free one)."""
        self._server = gevent.server.StreamServer((host, port), self._serve)
        try:
            self._server.start()
        except OSError as exc:
            raise CorralError(f"cannot listen on data port {port}: {exc.strerror or exc}",
                              ErrorCode.BAD_REQUEST) from None
        return int(self._server.server_port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(timeout=1)

    def relay(self, hop: NextHop, stall: float) -> Relay:
        return Relay(hop, self.token, self._client_context, self.max_frame,
                     stall or LINK_STALL)

    # --- the receiving end ----------------------------------------------------------------

    def _serve(self, sock: Any, address: tuple[str, int]) -> None:
        peer = f"{address[0]}:{address[1]}"
        inbound: Inbound | None = None
        ended = False
        reason = "the previous node closed the link"
        try:
            if self._server_context is not None:
                sock = self._server_context.wrap_socket(sock, server_side=True,
                                                        do_handshake_on_connect=False)
                sock.settimeout(HANDSHAKE_TIMEOUT)
                sock.do_handshake()
            sock.settimeout(HANDSHAKE_TIMEOUT)
            channel = FrameChannel(sock, self.max_frame)
            ticket = self._admit(channel, sock)
            inbound = Inbound(ticket.transfer, sock)
            sinks = self.sinks
            if sinks is None or not sinks.attach(inbound):
                raise AuthError("data link refused: that copy is not in progress here")
            nonce = auth.new_nonce()
            channel.send(LinkWelcome(nonce=nonce).to_wire())
            keys = _link_keys(self.token, ticket.nonce, nonce)
            channel.authenticate(sending_key=keys.client_to_master,
                                 receiving_key=keys.master_to_client)
            sock.settimeout(None)  # a stalled sender is the master's to cut out
            log.info("data link from %s (%s) for copy %s", ticket.sender, peer,
                     ticket.transfer)
            # A link whose data is always there never enters the event loop by itself:
            # turns keep the heartbeats and the master connection going meanwhile.
            turns = Turns(gevent.sleep)
            while not ended:
                message = decode(channel.read())
                turns.take()
                if not isinstance(message, (PutEntry, PutChunk, PutEnd)):
                    raise ProtocolError(f"unexpected {message.TAG} on a data link")
                ended = sinks.frame(ticket.transfer, message)
        except AuthError as exc:
            reason = exc.message
            log.warning("data link from %s: %s", peer, exc.message)
            with contextlib.suppress(OSError):
                FrameChannel(sock).send(ErrorFrame(code=int(exc.code),
                                                   message=exc.message).to_wire())
        except ssl.SSLError as exc:
            reason = ("TLS: the other end does not speak TLS, and this cluster does"
                      if tls.peer_not_tls(exc)
                      else "TLS: " + tls.describe_failure(exc, "node", "previous node"))
            log.warning("data link from %s: %s", peer, reason)
        except CorralError as exc:
            reason = exc.message
        except OSError as exc:
            reason = f"connection lost: {exc.strerror or exc}"
        finally:
            with contextlib.suppress(OSError):
                sock.close()
            if inbound is not None and not ended and self.sinks is not None:
                self.sinks.lost(inbound.transfer, reason)

    def _admit(self, channel: FrameChannel, sock: Any) -> Ticket:
        first = decode(channel.read())
        if not isinstance(first, LinkTicket):
            raise AuthError(f"data link refused: expected a ticket, got {first.TAG}")
        ticket = Ticket(first.transfer, first.sender, first.receiver, first.expires,
                        first.nonce, first.mac)
        if self._server_context is not None:
            names = tls.certificate_names(sock.getpeercert() or {})
            if ticket.sender not in names:
                raise AuthError(f"data link refused: the ticket is for {ticket.sender!r} "
                                "but the certificate is not")
        deadline = time.monotonic() + ANNOUNCE_WAIT
        while True:
            try:
                self.gate.admit(ticket)
                return ticket
            except NotAnnounced:
                # The master announces a link to the receiver before it tells the sender,
                # but over another connection: the announcement may be a moment behind.
                if time.monotonic() >= deadline:
                    raise
                gevent.sleep(_ANNOUNCE_POLL)
