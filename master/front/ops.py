"""The master's operations as front ends call them: a name, keyword arguments, the type of
the result, and the type of what streams before it (log chunks, progress, events).

The in-process console calls them through ``master.local.LocalBackend``; the ``corral``
CLI and attached consoles through the control socket (``master.front.control``). The
engine side of the socket is ``master.control``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

from common.procs import ProcInfo
from master.events import Event
from master.front.results import (
    GroupResult,
    JobMember,
    JobView,
    LogChunk,
    NodeView,
    Progress,
    RemoveOutcome,
    RunResult,
    SignalOutcome,
    TransferResult,
    UsageReport,
    WaitOutcome,
    WaitResult,
)
from master.front.sharing import BarrierOutcome, BarrierView, CasOutcome, VarChange, VarEntry

ItemCallback = Callable[[Any], None]


@dataclasses.dataclass(frozen=True)
class Op:
    result: Any
    item: Any = None  # what streams before the result, if anything
    to_the_end: bool = False  # cancelled, it winds down and still reports what it did


OPS: dict[str, Op] = {
    "nodes": Op(list[NodeView]),
    "wait_ready": Op(WaitOutcome),
    "exec": Op(GroupResult[list[ProcInfo]]),
    "processes": Op(GroupResult[list[ProcInfo]]),
    "signal": Op(list[SignalOutcome]),
    "signal_all": Op(GroupResult[list[SignalOutcome]]),
    "forget": Op(list[SignalOutcome]),
    "forget_ended": Op(GroupResult[list[SignalOutcome]]),
    "forget_node": Op(type(None)),
    "rusage": Op(GroupResult[UsageReport]),
    "log": Op(bool, item=LogChunk),  # the result: the process has ended
    "wait": Op(list[WaitResult]),
    "run": Op(GroupResult[RunResult], to_the_end=True),
    "script": Op(GroupResult[RunResult], to_the_end=True),
    "copy": Op(GroupResult[TransferResult], item=Progress),
    "pull": Op(GroupResult[TransferResult], item=Progress),
    "remove": Op(GroupResult[list[RemoveOutcome]]),
    "node_names": Op(list[str]),
    "process_refs": Op(list[str]),
    "jobs": Op(list[JobView]),
    "job_members": Op(list[JobMember]),
    "job_names": Op(list[str]),  # the jobs the master remembers, newest first (completion)
    "setenv": Op(dict[str, str]),  # each returns the global environment after
    "unsetenv": Op(dict[str, str]),
    "env": Op(dict[str, str]),
    "events": Op(type(None), item=Event),  # streams until the caller goes
    # Shared variables and barriers (master.shared)
    "var_set": Op(VarEntry),
    "var_get": Op(VarEntry),
    "var_cas": Op(CasOutcome),
    "var_del": Op(bool),  # the variable existed
    "var_list": Op(list[VarEntry]),
    "var_watch": Op(type(None), item=VarChange),  # streams until the caller goes
    "barrier": Op(BarrierOutcome),
    "barriers": Op(list[BarrierView]),
}


class Backend(Protocol):
    """Where a front end's operations run: the engine in this process, or a master at the
    other end of the control socket."""

    def call(self, op: str, args: dict[str, Any], on_item: ItemCallback | None = None
             ) -> Any:
        """Run ``op`` with keyword ``args``; ``on_item`` gets what streams before the
        result. Ctrl-C (KeyboardInterrupt) cancels it."""
        ...
