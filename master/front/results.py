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
from common.states import NodeState
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

    @classmethod
    def from_answer(cls, node: str, answer: SignalAnswer) -> SignalOutcome:
        return cls(f"{node}:{answer.pid}", answer.ok, peer_message(answer.message),
                   answer.still_running)


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

    @property
    def ok(self) -> bool:
        return self.info is not None and self.info.describe() == "exited 0"


@dataclasses.dataclass(frozen=True)
class Progress:
    done: int  # bytes sent to (or received from) all nodes so far
    total: int  # bytes expected; 0 when not known in advance (a pull)
    elapsed: float


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
