"""The typed results of the master's operations, as every front end sees them.

The engine builds them on its hub thread; the console renders them in-process, the control
socket carries them to the ``corral`` CLI and attached consoles (``master.front.codec``).
Each carries its own verdict (``ok``), so no front end re-derives success from text.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from common.errors import CorralError
from common.procs import ProcInfo
from common.replies import RunAnswer, SignalAnswer, UsageAnswer
from common.states import NodeState, ProcState
from common.text import peer_message

T = TypeVar("T")

UsageReport = UsageAnswer
RunResult = RunAnswer


@dataclasses.dataclass(frozen=True)
class GroupResult(Generic[T]):
    results: dict[str, T]
    errors: dict[str, CorralError]
    order: list[str]  # the target nodes, in node order

    @property
    def succeeded(self) -> list[str]:
        return [name for name in self.order if name in self.results]

    @property
    def failed(self) -> list[str]:
        return [name for name in self.order if name in self.errors]

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclasses.dataclass(frozen=True)
class NodeView:
    """A snapshot of one node, safe to hand to another thread."""

    name: str
    node_id: str
    host: str
    address: str
    state: NodeState
    since_heartbeat: float | None
    rtt_ms: float | None
    load: tuple[float, float, float] | None
    cpu_percent: float | None
    mem_available: int | None
    mem_total: int | None
    disk_free: int | None
    processes: int | None
    seen_at: float | None = None  # wall clock: when a GONE node was last known connected


@dataclasses.dataclass(frozen=True)
class SignalOutcome:
    ref: str
    ok: bool
    message: str = ""  # the error, or what became of the process (``killed SIGINT``)
    still_running: int = 0  # other members of its process group alive after the signal
    code: int = 0  # why not, when not ok (an ErrorCode)

    @classmethod
    def from_answer(cls, node: str, answer: SignalAnswer) -> SignalOutcome:
        return cls(f"{node}:{answer.pid}", answer.ok, peer_message(answer.message),
                   answer.still_running, answer.code)


@dataclasses.dataclass(frozen=True)
class LogChunk:
    data: bytes
    offset: int  # where the next chunk starts
    ended: bool  # the process has ended and this chunk reaches the end of its log
    more: bool  # the chunk was full: more is already there to read


@dataclasses.dataclass(frozen=True)
class WaitResult:
    ref: str
    info: ProcInfo | None
    error: str | None = None
    rank: int | None = None  # in its job, when a job was waited on

    @property
    def ok(self) -> bool:
        return self.info is not None and self.info.describe() == "exited 0"

    @property
    def status(self) -> int:
        return member_status(self.info, self.error)


# How a job member's error begins when its node refused the job: nothing of it ran there.
NEVER_STARTED = "never started: "
# Exit statuses a job reports for what did not exit by itself, as shells do.
STATUS_NOT_STARTED = 127  # the spawn failed (a shell's "command not found")
STATUS_STILL_RUNNING = 124  # at wait's timeout (timeout(1)'s status)
STATUS_UNKNOWN = 255  # lost with its node, forgotten, or ended while its client was down


def process_status(info: ProcInfo | None) -> int:
    """One number for how a process ended: its exit code; 128 + the signal that killed
    it; 127 if it never started; 124 still running; 255 not known."""
    if info is None:
        return STATUS_UNKNOWN
    state = info.proc_state
    if state is ProcState.EXITED:
        return info.exit_code or 0
    if state is ProcState.KILLED:
        return 128 + (info.signal or 0)
    if state is ProcState.SPAWN_FAILED:
        return STATUS_NOT_STARTED
    if state is ProcState.ENDED_UNKNOWN:
        return STATUS_UNKNOWN
    return STATUS_STILL_RUNNING


def member_status(info: ProcInfo | None, error: str | None) -> int:
    """``process_status``, and 127 for a job member its node refused to start."""
    if info is None and (error or "").startswith(NEVER_STARTED):
        return STATUS_NOT_STARTED
    return process_status(info)


def overall_status(statuses: list[int]) -> int:
    """A job's status (WISH's pjoin): 0 only if every process exited 0, else the worst."""
    return max(statuses, default=0)


@dataclasses.dataclass(frozen=True)
class JobMember:
    """One process of a job as its node sees it now."""

    job: str
    rank: int
    node: str
    pid: int  # 0: not known (never started, or its node has not said)
    info: ProcInfo | None  # None: its node could not say (see ``error``)
    error: str | None = None  # why it cannot be reached or shown

    @property
    def ref(self) -> str:
        return f"{self.node}:{self.pid}" if self.pid else f"{self.job}.{self.rank}"

    @property
    def status(self) -> int:
        return member_status(self.info, self.error)

    @property
    def unreachable(self) -> str | None:
        """Why there is no process to signal or log to show (None: there is one)."""
        if self.info is not None and self.pid:
            return None
        return self.error or (self.info.describe() if self.info else "not known")


@dataclasses.dataclass(frozen=True)
class JobView:
    """A line of ``jobs``."""

    job: str
    command: str
    origin: str  # exec, run or script
    created: float
    nodes: list[str]
    size: int
    running: int
    ended: int
    lost: int  # its node is not connected, or no longer knows it
    worst: int | None  # the worst status of those ended (None: none has)


@dataclasses.dataclass(frozen=True)
class Progress:
    done: int  # bytes sent to (or received from) all nodes so far
    total: int  # bytes expected; 0 when not known in advance (a pull)
    elapsed: float
    slowest: str = ""  # a chained copy: the node furthest behind, whose bytes ``done`` is


@dataclasses.dataclass(frozen=True)
class TransferResult:
    files: int
    bytes: int
    seconds: float
    notes: list[str] = dataclasses.field(default_factory=list)  # e.g. dangling links


@dataclasses.dataclass(frozen=True)
class RemoveOutcome:
    path: str
    ok: bool
    message: str = ""


ProgressCallback = Callable[[Progress], Any]


@dataclasses.dataclass(frozen=True)
class WaitOutcome:
    reached: bool
    ready: int
    wanted: int
    waited: float
    nodes: list[NodeView]


def natural_key(name: str) -> tuple[str, tuple[tuple[int, int], ...]]:
    """Node order as ClusterShell's NodeSet lists names: by the name's pattern (its numbers
    taken out), then by each number, shorter digit strings first (``n1 n2 n10 n001 n002``,
    never ``n1 n001 n2``)."""
    pattern = re.sub(r"\d+", "%s", name)
    return pattern, tuple((len(digits), int(digits)) for digits in re.findall(r"\d+", name))
