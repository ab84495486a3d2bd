"""What the master tells the operator about: nodes coming and going, processes ending."""

from __future__ import annotations

import dataclasses

from common.procs import ProcInfo
from common.states import NodeState, ProcState
from common.text import printable


@dataclasses.dataclass(frozen=True)
class NodeEvent:
    """A node joined, changed state, or was refused."""

    name: str
    old: NodeState | None
    new: NodeState | None
    detail: str = ""

    def describe(self) -> str:
        if self.new is None and self.old is NodeState.GONE:
            return f"node {self.name} forgotten"
        if self.new is None:
            return f"node {self.name} refused: {printable(self.detail)}"
        if self.old is None:
            return f"node {self.name} joined ({self.detail})"
        tail = f" ({printable(self.detail)})" if self.detail else ""
        return f"node {self.name}: {self.old} -> {self.new}{tail}"


@dataclasses.dataclass(frozen=True)
class ProcessEvent:
    """A process a client started has ended, been stopped or been continued."""

    node: str
    info: ProcInfo

    @property
    def ref(self) -> str:
        return f"{self.node}:{self.info.pid}"

    def describe(self) -> str:
        # A process reported running again has just been continued.
        state = "continued" if self.info.proc_state is ProcState.RUNNING else self.info.describe()
        return f"process {self.ref} ({short_command(self.info.argv)}) {state}"


@dataclasses.dataclass(frozen=True)
class ProcessesStarted:
    """``exec`` started processes on a node (their ends come as ProcessEvents)."""

    node: str
    procs: list[ProcInfo]

    def describe(self) -> str:
        started = [info for info in self.procs if info.pid]
        if len(started) == 1:
            return (f"{self.node}: started {self.node}:{started[0].pid} "
                    f"({short_command(started[0].argv)})")
        return f"{self.node}: started {len(started):,} processes"


Event = NodeEvent | ProcessEvent | ProcessesStarted


def short_command(argv: list[str], width: int = 40) -> str:
    text = printable(" ".join(argv))
    return text if len(text) <= width else text[: width - 1] + "…"
