"""TLS settings shared by master and client (stdlib ``ssl``), on top of the token handshake.

Both sides present a certificate and verify the other's against the given CA; the client
also checks that the master's certificate names the host it dialled.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
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
    """Load our certificate and the CA, and require the peer's certificate. Every error
    names the file it is about."""
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    for role, path in (("certificate", files.cert), ("key", files.key), ("CA", files.ca)):
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise CorralError(f"cannot read TLS {role} {path}: {exc.strerror or exc}",
                              ErrorCode.BAD_REQUEST) from None
    try:
        context.load_cert_chain(files.cert, files.key)
    except (OSError, ssl.SSLError) as exc:
        raise CorralError(f"cannot load TLS certificate {files.cert} with key {files.key}: "
                          f"{describe(exc)}", ErrorCode.BAD_REQUEST) from None
    try:
        context.load_verify_locations(files.ca)
    except (OSError, ssl.SSLError) as exc:
        raise CorralError(f"cannot load TLS CA {files.ca}: {describe(exc)}",
                          ErrorCode.BAD_REQUEST) from None
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


# Alerts a peer sends when it does not accept the certificate we showed it.
_CERTIFICATE_ALERTS = ("BAD_CERTIFICATE", "UNKNOWN_CA", "CERTIFICATE_UNKNOWN",
                       "CERTIFICATE_EXPIRED", "CERTIFICATE_REVOKED", "UNSUPPORTED_CERTIFICATE",
                       "CERTIFICATE_REQUIRED", "ACCESS_DENIED", "DECRYPT_ERROR")


def describe_failure(exc: ssl.SSLError | OSError, me: str, peer: str) -> str:
    """Why a TLS handshake between ``me`` and ``peer`` ("master", "client") failed, and
    whose certificate is at fault: a failed check here blames the peer's certificate, a
    certificate alert from the peer blames ours."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"the {peer}'s certificate is not accepted by this {me}: "
                f"{exc.verify_message or describe(exc)} (check the {peer} certificate's "
                f"names and the CA this {me} was given with --tls-ca)")
    reason = str(getattr(exc, "reason", None) or "")
    if "ALERT" in reason and reason.endswith(_CERTIFICATE_ALERTS):
        return (f"the {peer} refused this {me}'s certificate ({describe(exc)}; check this "
                f"{me}'s --tls-cert and the CA the {peer} was given)")
    if "ALERT" in reason:
        return f"the {peer} ended the handshake: {describe(exc)}"
    return describe(exc)


def fingerprint(cert_path: Path) -> str:
    """The SHA-256 fingerprint of the first certificate in a PEM file, as openssl prints
    it (``AB:CD:...``), for a person to compare with what a peer shows."""
    match = re.search(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----",
                      cert_path.read_text(errors="replace"), re.DOTALL)
    if match is None:
        raise CorralError(f"no certificate in {cert_path}", ErrorCode.BAD_REQUEST)
    return der_fingerprint(ssl.PEM_cert_to_DER_cert(match.group(0)))


def der_fingerprint(der: bytes) -> str:
    return ":".join(f"{byte:02X}" for byte in hashlib.sha256(der).digest())


def certificate_names(peer: dict[str, object]) -> set[str]:
    """The names a verified peer certificate (``getpeercert()``) is for: its subject's
    common name and its DNS subject alternative names."""
    names: set[str] = set()
    for rdn in peer.get("subject", ()):  # type: ignore[attr-defined]
        for key, value in rdn:
            if key == "commonName":
                names.add(value)
    for kind, value in peer.get("subjectAltName", ()):  # type: ignore[attr-defined]
        if kind == "DNS":
            names.add(value)
    return names
