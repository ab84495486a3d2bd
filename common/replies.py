"""What each request's reply carries: one registered, validated type per request.

A client's reply is checked against the type its request promises before the master uses
it, exactly as requests are checked on the client: a reply of the wrong shape is that
node's protocol error, never a crash of the command or a table of nonsense.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from common.errors import ErrorCode
from common.messages import (
    ExecRequest,
    ForgetRequest,
    GetRequest,
    ListRequest,
    LogRequest,
    Message,
    Ping,
    PutBegin,
    RemoveRequest,
    RunRequest,
    SignalRequest,
    UsageRequest,
    register,
)
from common.procs import ProcInfo, rusage_problem

_CODES = frozenset(int(code) for code in ErrorCode)


def _outcome_problem(ok: bool, code: int) -> str | None:
    if code != 0 and code not in _CODES:
        return f"unknown error code {code}"
    if ok != (code == 0):
        return "ok and code disagree"
    return None


@register
@dataclasses.dataclass(frozen=True)
class SignalAnswer(Message):
    """One pid of a SignalRequest: sent, or why not (``code`` 0 when ``ok``). When sent,
    ``message`` says what became of the process once the signal had time to act
    (``killed SIGINT``), and ``still_running`` counts the other members of its process
    group alive then."""

    TAG: ClassVar[str] = "signal-answer"

    pid: int
    ok: bool
    code: int = 0
    message: str = ""
    still_running: int = 0

    def problem(self) -> str | None:
        if self.still_running < 0:
            return "negative count of processes still running"
        return _outcome_problem(self.ok, self.code)


@register
@dataclasses.dataclass(frozen=True)
class ForgetAnswer(SignalAnswer):
    """One pid of a ForgetRequest: forgotten, or why not (still running, not ours)."""

    TAG: ClassVar[str] = "forget-answer"


@register
@dataclasses.dataclass(frozen=True)
class UsageAnswer(Message):
    """getrusage(RUSAGE_CHILDREN) of the client, and its process table."""

    TAG: ClassVar[str] = "rusage-answer"

    children: dict[str, float]
    processes: list[ProcInfo]

    def problem(self) -> str | None:
        return rusage_problem(self.children)


@register
@dataclasses.dataclass(frozen=True)
class LogAnswer(Message):
    """Bytes of a process log; ``offset`` is where the next read starts."""

    TAG: ClassVar[str] = "log-answer"

    data: bytes
    offset: int
    ended: bool

    def problem(self) -> str | None:
        return "negative offset" if self.offset < 0 else None


@register
@dataclasses.dataclass(frozen=True)
class RunAnswer(Message):
    """How ``/bin/sh -c COMMAND`` ended and what it wrote (``dropped``: bytes beyond the
    output limit); ``cancelled`` when a ``cancel`` stopped it; ``pid`` of the command on
    the node."""

    TAG: ClassVar[str] = "run-answer"

    exit_code: int | None
    signal: int | None
    stdout: bytes
    stderr: bytes
    dropped: int
    timed_out: bool
    duration: float
    cancelled: bool = False  # stopped on the node at the master's request
    pid: int = 0  # of the shell (or program) on the node
    job: str = ""  # the request's job, said back

    def problem(self) -> str | None:
        if self.dropped < 0 or self.duration < 0:
            return "negative dropped count or duration"
        return None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.cancelled


@register
@dataclasses.dataclass(frozen=True)
class PutAnswer(Message):
    """Where a push landed on the node (the path DEST stands for there) and what it
    wrote."""

    TAG: ClassVar[str] = "put-answer"

    path: str
    files: int
    bytes: int

    def problem(self) -> str | None:
        return "negative count" if self.files < 0 or self.bytes < 0 else None


@register
@dataclasses.dataclass(frozen=True)
class GetAnswer(Message):
    """How much a get sent, once all of it is sent."""

    TAG: ClassVar[str] = "get-answer"

    files: int
    bytes: int
    notes: list[str] = dataclasses.field(default_factory=list)

    def problem(self) -> str | None:
        return "negative count" if self.files < 0 or self.bytes < 0 else None


@register
@dataclasses.dataclass(frozen=True)
class RemoveAnswer(Message):
    """One path of a RemoveRequest: removed, or why not."""

    TAG: ClassVar[str] = "rm-answer"

    path: str
    ok: bool
    code: int = 0
    message: str = ""

    def problem(self) -> str | None:
        return _outcome_problem(self.ok, self.code)


REPLY_TYPES: dict[type[Message], Any] = {
    Ping: type(None),
    ExecRequest: list[ProcInfo],
    ListRequest: list[ProcInfo],
    SignalRequest: list[SignalAnswer],
    ForgetRequest: list[ForgetAnswer],
    UsageRequest: UsageAnswer,
    LogRequest: LogAnswer,
    RunRequest: RunAnswer,
    PutBegin: PutAnswer,
    GetRequest: GetAnswer,
    RemoveRequest: list[RemoveAnswer],
}
