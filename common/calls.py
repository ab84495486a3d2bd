"""Calls that a client forwards for the processes it started: a ``corral`` command run
inside a job reaches its node's client through ``CORRAL_SOCKET``, and the client passes the
call on to the master over its authenticated connection (these messages), so a job can use
shared variables, barriers and every other command without a socket of the master's.

The operation and its arguments are those of the master's control socket (``op``, ``args``
as ``master.front.ops`` defines them); the master answers with what streams, then a result
or an error. The client numbers the calls (``req``) itself: they are apart from the
master's requests, which the master numbers.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, ClassVar

from common.messages import Message, register

_OP = re.compile(r"[a-z][a-z_]{0,63}")
MAX_REF = 128


@register
@dataclasses.dataclass(frozen=True)
class ForwardedCall(Message):
    """client -> master: process ``pid`` of this node calls operation ``op``. ``ref`` is the
    process this client started that ``pid`` is (or descends from), as ``NODE:PID``, and
    ``job`` its place in its job (``J12.3``).
    Answered by ``call-item`` frames, then one ``call-result`` or ``call-error``."""

    TAG: ClassVar[str] = "call"

    req: int
    op: str
    args: dict[str, Any]
    pid: int
    ref: str = ""
    job: str = ""  # that process's place in its job (J12.3), if it has one

    def problem(self) -> str | None:
        if not _OP.fullmatch(self.op):
            return "op must be 1 to 64 lowercase letters and '_'"
        if self.req < 1 or self.pid < 1:
            return "req and pid must be positive"
        if len(self.ref) > MAX_REF or len(self.job) > MAX_REF:
            return f"ref or job longer than {MAX_REF} characters"
        return None


@register
@dataclasses.dataclass(frozen=True)
class CallCancel(Message):
    """client -> master: the process went away or was interrupted; stop call ``req``."""

    TAG: ClassVar[str] = "call-cancel"

    req: int


@register
@dataclasses.dataclass(frozen=True)
class CallItem(Message):
    """master -> client: something call ``req`` streams before its result (a log chunk, a
    change of a watched variable)."""

    TAG: ClassVar[str] = "call-item"

    req: int
    value: Any = None


@register
@dataclasses.dataclass(frozen=True)
class CallResult(Message):
    """master -> client: the result of call ``req`` (its last frame)."""

    TAG: ClassVar[str] = "call-result"

    req: int
    value: Any = None


@register
@dataclasses.dataclass(frozen=True)
class CallError(Message):
    """master -> client: call ``req`` failed (its last frame): an error code and a line."""

    TAG: ClassVar[str] = "call-error"

    req: int
    code: int
    message: str
