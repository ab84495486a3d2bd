"""What a client reports about a process it started, shared by both sides and the wire."""

from __future__ import annotations

import dataclasses
import signal
from typing import Any, ClassVar

from common.messages import Message, register
from common.states import ENDED_STATES, ProcState
from common.text import printable, quoted

_STATE_VALUES = frozenset(state.value for state in ProcState)

RUSAGE_FIELDS = ("ru_utime", "ru_stime", "ru_maxrss", "ru_minflt", "ru_majflt", "ru_nvcsw",
                 "ru_nivcsw")


def rusage_dict(usage: Any) -> dict[str, float]:
    """The fields of a ``resource.struct_rusage`` that corral reports (maxrss in KiB)."""
    return {name: float(getattr(usage, name)) for name in RUSAGE_FIELDS}


LATEST_TIME = 253_402_300_799.0  # 9999-12-31 23:59:59 UTC, in wall-clock seconds


def rusage_problem(usage: dict[str, float]) -> str | None:
    """A rusage map must have exactly corral's fields, none negative."""
    if set(usage) != set(RUSAGE_FIELDS):
        return f"rusage fields are {sorted(usage)}, expected {list(RUSAGE_FIELDS)}"
    if any(value < 0 for value in usage.values()):
        return "a rusage figure is negative"
    return None


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def not_started_here(pid: int) -> str:
    """The one wording, wherever it is said (kill, wait, log...), for a pid that is not
    in a client's table."""
    return f"pid {pid} was not started by this client"


def parse_signal(text: str) -> int:
    """``INT``, ``SIGINT``, ``int`` or ``2`` -> 2; ValueError for anything else."""
    if text.isdigit():
        number = int(text)
        signal.Signals(number)  # raises ValueError for an unknown number
        return number
    name = text.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise ValueError(f"unknown signal {text!r}") from None


@register
@dataclasses.dataclass(frozen=True)
class ProcInfo(Message):
    """One process of a client's table, as the client saw it when it answered."""

    TAG: ClassVar[str] = "proc"

    seq: int
    pid: int  # 0 when the spawn failed
    argv: list[str]
    cwd: str
    log: str
    state: str  # a ProcState value
    started: float  # wall-clock seconds
    ended: float | None = None
    exit_code: int | None = None
    signal: int | None = None  # the one that killed it, or that stopped it (state stopped)
    error: str | None = None
    rusage: dict[str, float] | None = None  # wait4's, once ended
    cpu_time: float | None = None  # user + system, while running
    rss: int | None = None  # bytes, while running
    origin: str = "exec"  # "run": a command the master waits on (its output is captured)
    job: str = ""  # the job it belongs to (J12), and its rank there
    rank: int | None = None

    def problem(self) -> str | None:
        if self.state not in _STATE_VALUES:
            return f"unknown process state {quoted(self.state)}"
        if self.pid < 0 or self.seq < 0:
            return "negative pid or seq"
        if any(t is not None and not 0 <= t <= LATEST_TIME for t in (self.started, self.ended)):
            return "start or end time is not a date a clock can show"
        if any(v is not None and v < 0 for v in (self.cpu_time, self.rss, self.rank)):
            return "negative cpu time, rss or rank"
        if self.rusage is not None:
            return rusage_problem(self.rusage)
        return None

    @property
    def proc_state(self) -> ProcState:
        return ProcState(self.state)

    @property
    def ended_state(self) -> bool:
        return self.proc_state in ENDED_STATES

    def describe(self) -> str:
        """The state words the console shows: running, stopped (SIG), exited N, killed SIG,
        spawn failed: REASON."""
        state = self.proc_state
        if state is ProcState.EXITED:
            return f"exited {self.exit_code}"
        if state is ProcState.KILLED:
            return f"killed {signal_name(self.signal or 0)}"
        if state is ProcState.SPAWN_FAILED:
            return f"spawn failed: {printable(self.error or '')}"
        if state is ProcState.STOPPED:
            return f"stopped ({signal_name(self.signal or 0)})"
        return str(state)


@register
@dataclasses.dataclass(frozen=True)
class ProcExited(Message):
    """client -> master event: processes ended, stopped or continued (all those one
    reaping pass found). Sent until acknowledged, even across reconnects; ``(boot, eseq)``
    lets the master drop a repeat."""

    TAG: ClassVar[str] = "exited"

    boot: str
    eseq: int
    procs: list[ProcInfo]

    def problem(self) -> str | None:
        if len(self.boot) > 64 or self.eseq < 1:
            return "bad boot id or event sequence number"
        return None
