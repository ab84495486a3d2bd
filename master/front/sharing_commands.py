"""The commands on what processes share through the master: ``var`` and ``barrier``.

Definitions like those of ``master.front.commands`` (one parser, one operation, one
renderer for the console and the ``corral`` CLI alike); from inside a job the CLI reaches
them through the node's client (``CORRAL_SOCKET``), elsewhere through the control socket.
"""

from __future__ import annotations

import argparse
import contextlib
import time

from common.argtypes import positive_int
from common.errors import UsageError
from common.text import printable, printable_lines
from common.varnames import MAX_NAME, NAME_RULE, value_problem, var_name_problem
from master.front import render
from master.front.commands import Command, Kit, Output, Report, seconds
from master.front.ops import Backend
from master.front.sharing import (
    BarrierOutcome,
    BarrierView,
    CasOutcome,
    VarChange,
    VarEntry,
)

VALUE_SHOWN = 60  # characters of a value in `var list`'s table

VAR_DESCRIPTION = (
    "Shared variables, kept by the master (they survive its restart): strings of up to "
    f"64 KiB, for processes of jobs and the operator to coordinate through. Names: "
    f"{NAME_RULE.removeprefix('a name is ')}.")


def var_name(text: str) -> str:
    if (problem := var_name_problem(text)) is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def var_value(text: str) -> str:
    if (problem := value_problem(text)) is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def _var_parser(kit: Kit) -> argparse.ArgumentParser:
    parser = kit.parser("var", VAR_DESCRIPTION)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    set_ = actions.add_parser("set", help="set NAME to VALUE",
                              description="Set NAME to VALUE (created if absent).")
    set_.add_argument("name", metavar="NAME", type=var_name)
    set_.add_argument("value", metavar="VALUE", type=var_value)
    get = actions.add_parser("get", help="print the value of NAME (exit 1 if absent)",
                             description="Print the value of NAME; exit 1 if it does not "
                                         "exist.")
    get.add_argument("name", metavar="NAME", type=var_name)
    get.add_argument("--wait", action="store_true",
                     help="wait until NAME exists (Ctrl-C stops)")
    get.add_argument("--timeout", type=seconds, metavar="S",
                     help="with --wait: give up after S seconds (exit 1)")
    cas = actions.add_parser(
        "cas", help="set NAME to NEW only if it holds OLD (exit 0 swapped, 1 not)",
        description="Atomic test-and-set: set NAME to NEW only if it holds OLD now "
                    "(with --absent: only if it does not exist); exit 0 if swapped, 1 if "
                    "not, saying what it holds.")
    cas.add_argument("--absent", action="store_true",
                     help="swap only if NAME does not exist; then give NAME NEW")
    cas.add_argument("name", metavar="NAME", type=var_name)
    cas.add_argument("first", metavar="OLD", type=var_value,
                     help="the value NAME must hold (with --absent: NEW)")
    cas.add_argument("second", nargs="?", metavar="NEW", type=var_value,
                     help="the value to give it")
    delete = actions.add_parser("del", help="delete NAME (exit 1 if absent)",
                                description="Delete NAME; exit 1 if it did not exist.")
    delete.add_argument("name", metavar="NAME", type=var_name)
    list_ = actions.add_parser("list", help="the variables, by name",
                               description="Show the variables whose names start with "
                                           "PREFIX (all without it).")
    list_.add_argument("prefix", nargs="?", default="", metavar="PREFIX")
    watch = actions.add_parser("watch", help="print NAME now and at each change",
                               description="Print NAME as it is now, then each change "
                                           "(NAME=VALUE, or NAME (absent)), until Ctrl-C.")
    watch.add_argument("name", metavar="NAME", type=var_name)
    return parser


def _var(args: argparse.Namespace, backend: Backend, out: Output) -> Report:
    action = args.action
    if action == "set":
        entry = backend.call("var_set", {"name": args.name, "value": args.value})
        return Report(entry, None, False)
    if action == "get":
        if args.timeout is not None and not args.wait:
            raise UsageError("--timeout goes with --wait")
        entry = backend.call("var_get", {"name": args.name, "wait": args.wait,
                                         "timeout": args.timeout})
        # Anyone may have set it: on a terminal (the CLI says so in ``color``; the console
        # is one) control characters are escaped, as in a log; redirected, it is as it is.
        value = printable_lines(entry.value) if getattr(args, "color", True) else entry.value
        return Report(entry, render.Rendered(value, []), False)
    if action == "cas":
        return _cas(args, backend)
    if action == "del":
        existed = backend.call("var_del", {"name": args.name})
        errors = [] if existed else [f"error: no variable {args.name}"]
        return Report({"name": args.name, "deleted": existed},
                      render.Rendered("", errors), not existed)
    if action == "list":
        entries = backend.call("var_list", {"prefix": args.prefix})
        return Report(entries, render.Rendered(_var_table(entries), []), False)
    return _watch(args.name, backend, out)


def _cas(args: argparse.Namespace, backend: Backend) -> Report:
    if args.absent == (args.second is not None):
        raise UsageError("var cas NAME OLD NEW, or var cas --absent NAME NEW")
    old, new = (None, args.first) if args.absent else (args.first, args.second)
    outcome: CasOutcome = backend.call("var_cas", {"name": args.name, "old": old,
                                                   "new": new})
    if outcome.swapped:
        return Report(outcome, None, False)
    current = outcome.current
    held = (f"it holds {_shown(current.value)} (set by {current.set_by})"
            if current is not None else "it does not exist")
    return Report(outcome, render.Rendered("", [f"not swapped: {args.name}: {held}"]), True)


def _shown(value: str, width: int | None = None) -> str:
    text = printable(value)
    if width is not None and len(text) > width:
        text = text[:width - 3] + "..."
    return repr(text)


def _var_table(entries: list[VarEntry]) -> str:
    rows = [[e.name, _shown(e.value, VALUE_SHOWN), e.set_by, render.clock(e.set_at)]
            for e in entries]
    return render._table(rows, ["name", "value", "set by", "set at"]) if rows else \
        "no variables"


def change_line(change: VarChange) -> str:
    if change.entry is None:
        return f"{change.name} (absent)"
    return f"{change.name}={change.entry.value}"


def _watch(name: str, backend: Backend, out: Output) -> Report:
    seen = 0

    def show(change: VarChange) -> None:
        nonlocal seen
        seen += 1
        out.record(change_line(change), change)

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how one stops watching
        backend.call("var_watch", {"name": name}, show)
    return Report({"name": name, "changes": seen}, None, False)


def _barrier_parser(kit: Kit) -> argparse.ArgumentParser:
    parser = kit.parser(
        "barrier", "Wait until N participants (this one included) have arrived at "
        "barrier NAME, then return. Fails on timeout, or when the node of a participant "
        "goes GONE (named). The name is free again once released. Without NAME: the "
        "barriers participants wait at now.")
    parser.add_argument("name", nargs="?", metavar="NAME", type=var_name,
                        help=f"the barrier (up to {MAX_NAME} characters)")
    parser.add_argument("--count", type=positive_int, metavar="N",
                        help="participants to wait for, the same for every one")
    parser.add_argument("--timeout", type=seconds, metavar="S",
                        help="give up after S seconds (default: wait forever)")
    return parser


def _barrier(args: argparse.Namespace, backend: Backend, _out: Output) -> Report:
    if args.name is None:
        if args.count is not None or args.timeout is not None:
            raise UsageError("barrier NAME --count N [--timeout S]")
        views: list[BarrierView] = backend.call("barriers", {})
        return Report(views, render.Rendered(_barrier_table(views), []), False)
    if args.count is None:
        raise UsageError("barrier NAME needs --count N")
    if args.timeout == 0:
        raise UsageError("--timeout must be positive")
    outcome: BarrierOutcome = backend.call("barrier", {"name": args.name,
                                                       "count": args.count,
                                                       "timeout": args.timeout})
    return Report(outcome, None, False)


def _barrier_table(views: list[BarrierView]) -> str:
    if not views:
        return "no barrier is waited at"
    now = time.time()
    rows = [[v.name, v.generation, f"{len(v.participants)} of {v.count}",
             render.duration(now - v.waiting_since), ", ".join(v.participants)]
            for v in views]
    return render._table(rows, ["barrier", "generation", "arrived", "waiting for", "who"])


SHARING_COMMANDS = [
    Command("var", "Shared variables: set, get [--wait], cas, del, list, watch.",
            _var_parser, _var),
    Command("barrier", "Wait at barrier NAME until --count N participants have arrived.",
            _barrier_parser, _barrier),
]
