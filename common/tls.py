"""TLS settings shared by master and client (stdlib ``ssl``), on top of the token handshake.

Both sides present a certificate and verify the other's against the given CA; the client
also checks that the master's certificate names the host it dialled.
"""

from __future__ import annotations

import dataclasses
import ssl
from pathlib import Path

from common.errors import CorralError, ErrorCode


@dataclasses.dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    ca: Path

    @classmethod
    def from_options(cls, cert: Path | None, key: Path | None, ca: Path | None
                     ) -> TlsFiles | None:
        given = [x is not None for x in (cert, key, ca)]
        if not any(given):
            return None
        if not all(given):
            raise CorralError("TLS needs all three of --tls-cert, --tls-key and --tls-ca",
                              ErrorCode.BAD_REQUEST)
        assert cert is not None and key is not None and ca is not None
        return cls(cert, key, ca)


def configure(context: ssl.SSLContext, files: TlsFiles) -> ssl.SSLContext:
    """Load our certificate and the CA, and require the peer's certificate."""
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(files.cert, files.key)
        context.load_verify_locations(files.ca)
    except (OSError, ssl.SSLError) as exc:
        raise CorralError(f"cannot load TLS files: {exc}", ErrorCode.BAD_REQUEST) from None
    context.verify_mode = ssl.CERT_REQUIRED
    return context


# The first bytes of every TLS connection: a handshake record (22) of version 3.x.
_TLS_HANDSHAKE_RECORD = 0x16
_TLS_MAJOR_VERSION = 0x03
# What OpenSSL says when the peer's first bytes are not a TLS record at all.
_NOT_TLS_REASONS = {"WRONG_VERSION_NUMBER", "UNKNOWN_PROTOCOL", "PACKET_LENGTH_TOO_LONG",
                    "RECORD_LAYER_FAILURE", "HTTP_REQUEST"}
ENABLE_HINT = "--tls-cert, --tls-key and --tls-ca"


def opens_tls(first_bytes: bytes) -> bool:
    """Whether a peer's first bytes start a TLS handshake (and so are no corral frame:
    read as a length, they would be a frame of some 369 MB)."""
    return (first_bytes[:1] == bytes([_TLS_HANDSHAKE_RECORD])
            and first_bytes[1:2] in (b"", bytes([_TLS_MAJOR_VERSION])))


def peer_not_tls(exc: ssl.SSLError | OSError) -> bool:
    """Whether a failed TLS handshake failed because the peer does not speak TLS."""
    return getattr(exc, "reason", None) in _NOT_TLS_REASONS


def describe(exc: ssl.SSLError | OSError) -> str:
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
    return str(reason).replace("_", " ").lower()
