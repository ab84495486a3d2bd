"""The shared token and the mutual HMAC-SHA256 proofs exchanged in the handshake.

Each side proves it holds the token by a MAC over both nonces, with a different label per
direction so one side's proof can never be replayed as the other's. Each proof also covers
the fields its frame carries (the client's identity, the master's heartbeat interval): the
handshake's frames have no frame MAC, so without this someone on the path could relay a
real handshake with another name or node id in it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import struct
from pathlib import Path

from common.errors import AuthError

TOKEN_ENV = "CORRAL_TOKEN"
NONCE_BYTES = 32
_CLIENT_LABEL = b"corral-client-v2"
_MASTER_LABEL = b"corral-master-v2"
_LENGTH = struct.Struct(">I")
_DOUBLE = struct.Struct(">d")


def default_token_path() -> Path:
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(Path.home(), ".config")
    return Path(config) / "corral" / "token"


def new_nonce() -> bytes:
    return secrets.token_bytes(NONCE_BYTES)


def read_token(path: Path) -> bytes:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        raise AuthError(f"token file {path} does not exist") from None
    except OSError as exc:
        raise AuthError(f"cannot read token file {path}: {exc.strerror}") from None
    if not text:
        raise AuthError(f"token file {path} is empty")
    return text.encode()


def exposure_warning(path: Path) -> str | None:
    """A warning when users other than the owner can read or change the token file."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if mode & 0o077:
        return f"token file {path} can be read by other users; chmod 600 it"
    return None


def ensure_token(path: Path) -> tuple[bytes, bool]:
    """Read the master's token, creating it (mode 0600) first if absent; True if created."""
    if path.exists():
        return read_token(path), False
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    # O_EXCL: never clobber a token another master wrote a moment ago.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    return token.encode(), True


def client_token(token_file: Path | None) -> bytes:
    """The token a client uses: --token-file, else $CORRAL_TOKEN, else the default file."""
    # Taken out of this process's environment whatever the source: every process the
    # client starts inherits that environment, and must not get the fleet's secret.
    from_env = os.environ.pop(TOKEN_ENV, "").strip()
    if token_file is not None:
        return read_token(token_file)
    if from_env:
        return from_env.encode()
    return read_token(default_token_path())


def claims(*values: str | int | float) -> bytes:
    """Fields a proof covers, as one unambiguous byte string: per value a type letter, a
    4-byte big-endian length and the bytes (a str in UTF-8, an int in decimal ASCII, a
    float as an IEEE 754 double, big-endian)."""
    parts = []
    for value in values:
        if isinstance(value, str):
            kind, data = b"s", value.encode("utf-8", "surrogatepass")
        elif isinstance(value, int):
            kind, data = b"i", str(value).encode()
        else:
            kind, data = b"f", _DOUBLE.pack(value)
        parts.append(kind + _LENGTH.pack(len(data)) + data)
    return b"".join(parts)


def register_claims(version: int, node_id: str, name: str, host: str, pid: int) -> bytes:
    return claims(version, node_id, name, host, pid)


def welcome_claims(heartbeat: float) -> bytes:
    return claims(float(heartbeat))


def _mac(token: bytes, label: bytes, master_nonce: bytes, client_nonce: bytes,
         covered: bytes) -> bytes:
    return hmac.new(token, label + master_nonce + client_nonce + covered,
                    hashlib.sha256).digest()


def client_proof(token: bytes, master_nonce: bytes, client_nonce: bytes,
                 register: bytes) -> bytes:
    """``register`` is ``register_claims`` of the register frame the proof travels in."""
    return _mac(token, _CLIENT_LABEL, master_nonce, client_nonce, register)


def master_proof(token: bytes, master_nonce: bytes, client_nonce: bytes,
                 welcome: bytes) -> bytes:
    """``welcome`` is ``welcome_claims`` of the welcome frame the proof travels in."""
    return _mac(token, _MASTER_LABEL, master_nonce, client_nonce, welcome)


def verify(expected: bytes, given: bytes) -> bool:
    return hmac.compare_digest(expected, given)
