"""Per-frame authentication once the handshake is done: session keys and frame MACs.

The handshake proves who holds the token, but on its own it says nothing about the frames
that follow: anyone on the path could relay a real handshake and then inject, replay or
reorder frames. So both sides derive a key per direction from the token and both nonces
(HKDF-SHA256, RFC 5869) and every later frame ends with a MAC over a per-direction
sequence number and the frame's bytes. The sequence number is never sent: each side counts,
so a replayed, dropped, reordered or duplicated frame changes the number its MAC was made
with, and the check fails. Keys differ per connection (fresh nonces) and per direction
(labels), so a frame from another connection or from the other direction fails too.

HMAC-SHA256 rather than keyed BLAKE2b: on CPUs with SHA extensions it runs at about
1.9 GB/s against BLAKE2b's 1.3 GB/s here, and every language has it, which matters for an
independent client.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import struct

from common.errors import ProtocolError

TAG_BYTES = 16  # HMAC-SHA256 truncated to 128 bits, as in RFC 4868
_SEQUENCE_AND_LENGTH = struct.Struct(">QI")  # what the tag covers before the body
_MASTER_TO_CLIENT = b"corral-v2 frames master to client"
_CLIENT_TO_MASTER = b"corral-v2 frames client to master"


class FrameAuthError(ProtocolError):
    """A frame whose MAC does not match: forged, replayed, reordered, cut or altered."""


@dataclasses.dataclass(frozen=True)
class SessionKeys:
    master_to_client: bytes
    client_to_master: bytes


def _hkdf(token: bytes, salt: bytes, info: bytes) -> bytes:
    """HKDF-SHA256 for one 32-byte key: extract, then the first block of expand."""
    pseudo_random_key = hmac.digest(salt, token, "sha256")
    return hmac.digest(pseudo_random_key, info + b"\x01", "sha256")


def session_keys(token: bytes, master_nonce: bytes, client_nonce: bytes) -> SessionKeys:
    salt = master_nonce + client_nonce
    return SessionKeys(master_to_client=_hkdf(token, salt, _MASTER_TO_CLIENT),
                       client_to_master=_hkdf(token, salt, _CLIENT_TO_MASTER))


class FrameMac:
    """One direction of one connection: its key and the number of the next frame.

    Both ends keep one of these per direction and feed it every frame in wire order, the
    sender to make tags, the receiver to check them.
    """

    def __init__(self, key: bytes) -> None:
        self._keyed = hmac.new(key, digestmod=hashlib.sha256)  # copied per frame: no re-keying
        self.sequence = 0

    def next_tag(self, length: int, body: bytes | memoryview) -> bytes:
        """The tag of the next frame (``length`` is its length prefix); counts the frame."""
        mac = self._keyed.copy()
        mac.update(_SEQUENCE_AND_LENGTH.pack(self.sequence, length))
        mac.update(body)
        self.sequence += 1
        return mac.digest()[:TAG_BYTES]

    def check(self, length: int, body: bytes | memoryview, tag: bytes | memoryview) -> None:
        number = self.sequence
        if not hmac.compare_digest(self.next_tag(length, body), tag):
            raise FrameAuthError(f"frame {number} failed authentication (forged, replayed, "
                                 "reordered or altered on the way)")
