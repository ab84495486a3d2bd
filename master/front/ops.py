"""The master's operations as front ends call them: a name, keyword arguments, the type of
the result, and the type of what streams before it (log chunks, progress, events).

The in-process console calls them through ``master.local.LocalBackend``; the ``corral``
CLI and attached consoles through the control socket (``master.front.control``). The
engine side of the socket is ``master.control``.
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Callable
from typing import Any, Protocol, Union, get_args, get_origin

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
    # The keyword arguments it takes and their types, checked by ``args_problem`` wherever
    # a call arrives (an argument whose type allows None may be left out).
    args: dict[str, Any] = dataclasses.field(default_factory=dict)


NODESET = str | None  # a ClusterShell node set; None: every READY node
SECONDS = float | None  # None: wait for ever

OPS: dict[str, Op] = {
    "nodes": Op(list[NodeView]),
    "wait_ready": Op(WaitOutcome, args={"count": int, "timeout": SECONDS}),
    "exec": Op(GroupResult[list[ProcInfo]], args={
        "nodeset": NODESET, "argv": list[str], "cwd": str | None,
        "env": dict[str, str] | None, "stdin": bytes | None, "count": int}),
    "processes": Op(GroupResult[list[ProcInfo]], args={"nodeset": NODESET,
                                                       "job": str | None}),
    "signal": Op(list[SignalOutcome], args={"refs": list[str], "signum": int}),
    "signal_all": Op(GroupResult[list[SignalOutcome]], args={"nodeset": NODESET,
                                                             "signum": int}),
    "forget": Op(list[SignalOutcome], args={"refs": list[str]}),
    "forget_ended": Op(GroupResult[list[SignalOutcome]], args={"nodeset": NODESET}),
    "forget_node": Op(type(None), args={"name": str}),
    "rusage": Op(GroupResult[UsageReport], args={"nodeset": NODESET}),
    # the result: the process has ended
    "log": Op(bool, item=LogChunk, args={"ref": str, "lines": int | None, "follow": bool}),
    "wait": Op(list[WaitResult], args={"refs": list[str], "timeout": SECONDS}),
    "run": Op(GroupResult[RunResult], to_the_end=True, args={
        "nodeset": NODESET, "command": str, "timeout": float}),
    "script": Op(GroupResult[RunResult], to_the_end=True, args={
        "nodeset": NODESET, "local_file": str, "args": list[str], "timeout": float}),
    "copy": Op(GroupResult[TransferResult], item=Progress, args={
        "nodeset": NODESET, "sources": list[str], "dest": str, "recursive": bool,
        "follow": bool, "star": bool}),
    "pull": Op(GroupResult[TransferResult], item=Progress, args={
        "nodeset": NODESET, "remote_paths": list[str], "local_dir": str, "follow": bool}),
    "remove": Op(GroupResult[list[RemoveOutcome]], args={
        "nodeset": NODESET, "paths": list[str], "recursive": bool}),
    "node_names": Op(list[str]),
    "process_refs": Op(list[str], args={"running_only": bool}),
    "jobs": Op(list[JobView]),
    "job_members": Op(list[JobMember], args={"job": str}),
    "job_names": Op(list[str]),  # the jobs the master remembers, newest first (completion)
    # each returns the global environment after
    "setenv": Op(dict[str, str], args={"pairs": dict[str, str]}),
    "unsetenv": Op(dict[str, str], args={"names": list[str]}),
    "env": Op(dict[str, str]),
    "events": Op(type(None), item=Event),  # streams until the caller goes
    # Shared variables and barriers (master.shared)
    "var_set": Op(VarEntry, args={"name": str, "value": str}),
    "var_get": Op(VarEntry, args={"name": str, "wait": bool, "timeout": SECONDS}),
    "var_cas": Op(CasOutcome, args={"name": str, "old": str | None, "new": str}),
    "var_del": Op(bool, args={"name": str}),  # the variable existed
    "var_list": Op(list[VarEntry], args={"prefix": str}),
    # streams until the caller goes
    "var_watch": Op(type(None), item=VarChange, args={"name": str}),
    "barrier": Op(BarrierOutcome, args={"name": str, "count": int, "timeout": SECONDS}),
    "barriers": Op(list[BarrierView]),
}


def args_problem(op_name: str, args: dict[str, Any]) -> str | None:
    """Why ``args`` do not fit operation ``op_name`` (None when they do). Checked where
    a call comes in, so no operation meets a boolean where it counts (JSON's and
    msgpack's ``true`` is Python's 1), a nan that would never time out, or a missing
    argument."""
    declared = OPS[op_name].args
    for name in args:
        if name not in declared:
            return f"{op_name}: unknown argument {name!r}"
    for name, hint in declared.items():
        if name not in args:
            if not _allows_none(hint):
                return f"{op_name}: argument {name!r} is missing"
            continue
        if (problem := _type_problem(hint, args[name])) is not None:
            return f"{op_name}: {name} {problem}"
    return None


def _allows_none(hint: Any) -> bool:
    return get_origin(hint) in (Union, types.UnionType) and type(None) in get_args(hint)


_KINDS = {int: "a whole number", float: "a number", bool: "true or false", str: "text",
          bytes: "bytes", type(None): "nothing"}


def _type_problem(hint: Any, value: Any) -> str | None:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        problems = [_type_problem(arm, value) for arm in get_args(hint)]
        if any(problem is None for problem in problems):
            return None
        return problems[0]  # of the first arm: "None" is implied by "may be left out"
    if origin is list:
        if type(value) is not list:
            return f"must be a list, not {_kind_of(value)}"
        (item,) = get_args(hint)
        return next((f"item {n}: {p}" for n, v in enumerate(value)
                     if (p := _type_problem(item, v)) is not None), None)
    if origin is dict:
        if type(value) is not dict:
            return f"must be a map, not {_kind_of(value)}"
        key, item = get_args(hint)
        return next((f"{k!r}: {p}" for k, v in value.items()
                     if (p := _type_problem(key, k) or _type_problem(item, v)) is not None),
                    None)
    if hint is float and type(value) in (int, float):
        return None if math.isfinite(value) else f"must be a finite number, not {value}"
    if type(value) is hint:
        return None
    return f"must be {_KINDS.get(hint, hint)}, not {_kind_of(value)}"


def _kind_of(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else type(value).__name__


class Backend(Protocol):
    """Where a front end's operations run: the engine in this process, or a master at the
    other end of the control socket."""

    def call(self, op: str, args: dict[str, Any], on_item: ItemCallback | None = None
             ) -> Any:
        """Run ``op`` with keyword ``args``; ``on_item`` gets what streams before the
        result. Ctrl-C (KeyboardInterrupt) cancels it."""
        ...
