"""The client's half of the handshake, shared by the daemon and the benchmark's simulated
clients so that both speak exactly the same protocol."""

from __future__ import annotations

import contextlib
import dataclasses

from common import PROTOCOL_VERSION, auth, frame_auth, tcp_probe
from common.errors import AuthError, ErrorCode, ProtocolError, RemoteError
from common.framing import FrameChannel
from common.messages import ErrorFrame, Hello, Message, Register, Welcome, decode, error_code
from common.text import peer_message


@dataclasses.dataclass(frozen=True)
class Identity:
    node_id: str
    name: str
    host: str
    pid: int = 0


def send(channel: FrameChannel, message: Message) -> None:
    channel.send(message.to_wire())


def send_error_quietly(channel: FrameChannel, code: ErrorCode, text: str) -> None:
    with contextlib.suppress(OSError):
        send(channel, ErrorFrame(code=int(code), message=text))


def handshake(channel: FrameChannel, identity: Identity, token: bytes,
              watches_link: bool | None = None) -> Welcome:
    """Authenticate to the master, prove that it holds the token too, and from then on
    authenticate every frame on ``channel`` both ways.

    Raises AuthError, ProtocolError or RemoteError (the master refused us) with a message
    fit for a log line. Nothing is run for a master until this has returned.
    ``watches_link``: what to tell the master (None: whether this socket's kernel reports
    acknowledgements, as Linux does).
    """
    hello = decode(channel.read())
    if isinstance(hello, ErrorFrame):
        raise RemoteError(f"master refused: {peer_message(hello.message)}",
                          error_code(hello.code))
    if not isinstance(hello, Hello):
        raise ProtocolError(f"expected hello, got {hello.TAG}")
    if hello.version != PROTOCOL_VERSION:
        text = f"master speaks protocol {hello.version}, this client {PROTOCOL_VERSION}"
        send_error_quietly(channel, ErrorCode.VERSION_MISMATCH, text)
        raise ProtocolError(text, ErrorCode.VERSION_MISMATCH)
    client_nonce = auth.new_nonce()
    send(
        channel,
        Register(
            version=PROTOCOL_VERSION,
            node_id=identity.node_id,
            name=identity.name,
            host=identity.host,
            nonce=client_nonce,
            mac=auth.client_proof(token, hello.nonce, client_nonce, auth.register_claims(
                PROTOCOL_VERSION, identity.node_id, identity.name, identity.host,
                identity.pid)),
            pid=identity.pid,
            watches_link=(tcp_probe.unacknowledged_for(channel.stream) is not None
                          if watches_link is None else watches_link),
        ),
    )
    answer = decode(channel.read())
    if isinstance(answer, ErrorFrame):
        raise RemoteError(f"master refused: {peer_message(answer.message)}",
                          error_code(answer.code))
    if not isinstance(answer, Welcome):
        raise ProtocolError(f"expected welcome, got {answer.TAG}")
    proof = auth.master_proof(token, hello.nonce, client_nonce,
                              auth.welcome_claims(answer.heartbeat))
    if not auth.verify(proof, answer.mac):
        text = "master failed authentication: it does not hold our token"
        send_error_quietly(channel, ErrorCode.AUTH_FAILED, text)
        raise AuthError(text)
    keys = frame_auth.session_keys(token, hello.nonce, client_nonce)
    channel.authenticate(sending_key=keys.client_to_master, receiving_key=keys.master_to_client)
    return answer
