"""The project's one error root and the numeric codes that errors carry across the wire."""

from __future__ import annotations

import enum


class ErrorCode(enum.IntEnum):
    """Codes carried by error frames and error replies; stable across versions."""

    INTERNAL = 1
    PROTOCOL = 2  # malformed frame, unknown message type, bad fields
    FRAME_TOO_LARGE = 3
    AUTH_FAILED = 4
    VERSION_MISMATCH = 5
    HANDSHAKE_TIMEOUT = 6
    DUPLICATE_NAME = 7
    UNKNOWN_NODE = 8
    NO_REPLY = 9  # a request got no reply within its timeout
    DISCONNECTED = 10  # the peer went away while a request was in flight
    BAD_REQUEST = 11
    NOT_FOUND = 12
    PERMISSION = 13  # e.g. a pid this client did not spawn
    SPAWN_FAILED = 14
    OUTSIDE_SANDBOX = 15
    ALREADY_ENDED = 16
    CANCELLED = 17
    IO = 18
    BAD_NAME = 19  # a node name outside the naming rule
    NOT_A_DIRECTORY = 20  # a file where a folder is needed
    LINK_OUTSIDE = 21  # a link in a copied folder that leads outside it (see common.links)
    DANGLING_LINK = 22  # a link to follow (-L) that points at nothing
    MASTER_FULL = 23  # the master holds all the connections its open-file limit allows
    UPSTREAM_LOST = 24  # the node that fed this one a chained copy went away (see chain)


class CorralError(Exception):
    """Root of every error corral raises on purpose; `code` says which kind."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class ProtocolError(CorralError):
    """The peer broke the wire protocol; the connection cannot go on."""

    code = ErrorCode.PROTOCOL


class FrameTooLarge(ProtocolError):
    code = ErrorCode.FRAME_TOO_LARGE


class AuthError(CorralError):
    code = ErrorCode.AUTH_FAILED


class ConnectionClosed(CorralError):
    """The peer closed the connection (possibly in the middle of a frame)."""

    code = ErrorCode.DISCONNECTED


class RemoteError(CorralError):
    """An error the other side reported in an error reply."""


class UsageError(CorralError):
    """The operator asked for something that cannot be done as asked."""

    code = ErrorCode.BAD_REQUEST
