"""One definition of each command, shared by the console and the ``corral`` CLI: its
arguments (an argparse parser), the operation it calls, and how its result is rendered
and judged. Two parsers or two renderers for one command would drift apart.

Parsers are made through a ``Kit``: the CLI's makes plain argparse parsers; the console's
makes cmd2 parsers and adds Tab completion to the arguments marked with a ``Hint``.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from common.argtypes import positive_int
from common.errors import CorralError, ErrorCode, UsageError
from common.jobs import KEEP_JOBS, MAX_COPIES, env_entry_problem, looks_like_job, parse_job
from common.procs import parse_signal, signal_name
from master.front import render
from master.front.joblog import job_log
from master.front.nodepick import RANKINGS, STATE_CHOICES, pick
from master.front.ops import Backend
from master.front.results import GroupResult, LogChunk, Progress, overall_status
from master.logview import LogTail
from master.selection import STATES, select

DEFAULT_RUN_TIMEOUT = 30.0
PIPE_RULE = ("An unquoted | or > (and what follows it) is the console's own: it pipes or "
             "redirects the report on this machine. To send them to the nodes, give them to "
             "a shell there: run -- sh -c 'ls | wc -l > count'.")
RUN_DESCRIPTION = (
    "Run a shell command through /bin/sh -c on nodes and show each node's output. The text "
    "after -- reaches the nodes exactly as typed (quotes, spacing, ;, &&, $, globs); so does "
    "a word that is not a console command, with what follows it (the passthrough), unless "
    "it is within an edit or two of a command (lsit: did you mean list?). `set passthrough "
    "off`, or --no-passthrough on the master, turns the passthrough off: then only run "
    "sends commands. From the corral CLI the words after -- are joined with spaces, as ssh "
    "does. The command is one job; in it ?HOST becomes the node's name, ?RANK the node's "
    "rank in the job (??HOST: a literal ?HOST).")


REF_OR_JOB = "NODE:PID, or a job (J12: each of its processes) or one of its processes (J12.3)"


PLACEHOLDERS = ("?HOST becomes the node's name, ?RANK the process's rank in its job (??HOST: "
                "a literal ?HOST)")
FILE_PLACEHOLDERS = ("?HOST becomes the node's name, ?RANK its place among the target nodes "
                     "from 0 (??HOST: a literal ?HOST)")


class Hint(enum.Enum):
    """What an argument names, so the console can complete it."""

    NODES = "nodes"
    RUNNING_REF = "running-ref"
    ANY_REF = "any-ref"
    JOB = "job"
    RUNNING_REF_OR_JOB = "running-ref-or-job"
    ANY_REF_OR_JOB = "any-ref-or-job"
    LOCAL_PATH = "local-path"


class Kit(Protocol):
    def parser(self, name: str, description: str, epilog: str | None = None
               ) -> argparse.ArgumentParser: ...

    def hint(self, hint: Hint) -> dict[str, Any]: ...


class PlainKit:
    """Plain argparse parsers, no completion: for the CLI."""

    def parser(self, name: str, description: str, epilog: str | None = None
               ) -> argparse.ArgumentParser:
        return argparse.ArgumentParser(prog=f"corral {name}", description=description,
                                       epilog=epilog)

    def hint(self, hint: Hint) -> dict[str, Any]:
        return {}


class Output(Protocol):
    """Where a command writes what streams while it runs."""

    def log_data(self, chunk: LogChunk) -> None: ...

    def progress(self, progress: Progress) -> None: ...

    def record(self, line: str, value: Any) -> None:
        """One item of a stream of records (``var watch``'s changes): ``line`` as text,
        or under --json the item's own JSON document on a line of its own."""
        ...


@dataclasses.dataclass
class Report:
    """What a command did: its typed result (``last_result``, the JSON document), its
    rendering, and its verdict."""

    result: Any
    rendered: render.Rendered | None
    failed: bool
    status: int | None = None  # the exit status to give, when not just 0 or 1 (wait J12)


# --- argument types --------------------------------------------------------------------------

def signal_arg(text: str) -> int:
    try:
        return parse_signal(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected K=V, got {text!r}")
    problem = env_entry_problem(key, value)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return key, value


def job_arg(text: str) -> str:
    try:
        parse_job(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def seconds(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # nan would never time out
        raise argparse.ArgumentTypeError("must be a finite number of seconds")
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def program_words(words: list[str]) -> list[str]:
    return words[1:] if words[:1] == ["--"] else words


def add_nodeset(parser: argparse.ArgumentParser, kit: Kit) -> None:
    parser.add_argument("-w", dest="nodeset", metavar="NODESET", **kit.hint(Hint.NODES),
                        help="target nodes, e.g. n[1-3],web* (default: every READY node)")


# --- the commands ------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Command:
    name: str
    summary: str
    build: Callable[[Kit], argparse.ArgumentParser]
    perform: Callable[[argparse.Namespace, Backend, Output], Report]


def _list_parser(kit: Kit) -> argparse.ArgumentParser:
    parser = kit.parser("list", "Show the nodes and their latest figures.")
    parser.add_argument("--wait", type=positive_int, metavar="N",
                        help="first wait until N nodes are READY")
    parser.add_argument("--timeout", type=seconds, metavar="S",
                        help="give up waiting after S seconds (default: wait forever)")
    return parser


def _list(args: argparse.Namespace, backend: Backend, _out: Output) -> Report:
    if args.wait is None:
        nodes = backend.call("nodes", {})
        return Report(nodes, render.Rendered(render.nodes_table(nodes), []), False)
    outcome = backend.call("wait_ready", {"count": args.wait, "timeout": args.timeout})
    errors = [] if outcome.reached else [
        f"error: only {outcome.ready} of {outcome.wanted} nodes READY after "
        f"{outcome.waited:.1f} s"]
    return Report(outcome.nodes, render.Rendered(render.nodes_table(outcome.nodes), errors),
                  not outcome.reached)


def _exec_parser(kit: Kit) -> argparse.ArgumentParser:
    parser = kit.parser("exec", "Start a program on nodes, as one job. In its arguments "
                        + PLACEHOLDERS + ".")
    add_nodeset(parser, kit)
    parser.add_argument("--cwd", metavar="DIR", help="folder, relative to the work folder")
    parser.add_argument("--env", metavar="K=V", type=env_pair, action="append", default=[],
                        help="set an environment variable (repeatable)")
    parser.add_argument("--stdin", metavar="FILE", type=argparse.FileType("rb"),
                        help="a local file the program reads as its stdin")
    parser.add_argument("-n", dest="count", type=positive_int, default=1, metavar="COUNT",
                        help=f"start COUNT copies on each node (default 1, at most {MAX_COPIES:,})")
    parser.add_argument("program", nargs=argparse.REMAINDER, help="-- PROGRAM [ARGS...]")
    return parser


def _exec(args: argparse.Namespace, backend: Backend, _out: Output) -> Report:
    argv = program_words(args.program)
    if not argv:
        raise UsageError("no program given: exec [-w NODESET] -- PROGRAM [ARGS...]")
    stdin = None
    if args.stdin is not None:
        with args.stdin:
            stdin = args.stdin.read()
    group = backend.call("exec", {"nodeset": args.nodeset, "argv": argv, "cwd": args.cwd,
                                  "env": dict(args.env), "stdin": stdin, "count": args.count})
    spawn_failed = any(not info.pid for infos in group.results.values() for info in infos)
    return Report(group, render.exec_table(group), bool(group.errors) or spawn_failed)


def _pid_parser(kit: Kit) -> argparse.ArgumentParser:
    parser = kit.parser("pid", "Show the processes started on nodes.")
    add_nodeset(parser, kit)
    parser.add_argument("--state", choices=STATES,
                        help="only running ones, ended ones, or failed ones (ended otherwise "
                             "than by exit 0)")
    parser.add_argument("--program", metavar="GLOB",
                        help="only those whose program (name or path) or command line "
                             "matches GLOB, e.g. 'sleep*'")
    parser.add_argument("--last", type=positive_int, metavar="N",
                        help="only the N started last (on all the nodes together)")
    parser.add_argument("--job", type=job_arg, metavar="JOB", **kit.hint(Hint.JOB),
                        help="only the processes of job JOB (J12), or the one of J12.3, "
                             "from the job's own nodes")
    return parser


def _pid(args: argparse.Namespace, backend: Backend, _out: Output) -> Report:
    asked: dict[str, Any] = {"nodeset": args.nodeset}
    if args.job is not None:  # (kept out otherwise: an older master takes no job)
        asked["job"] = args.job
    group = select(backend.call("processes", asked), args.state, args.program, args.last)
    return Report(group, render.process_table(group, time.time()), bool(group.errors))


def _signal_parser(kit: Kit, name: str, description: str) -> argparse.ArgumentParser:
    parser = kit.parser(name, description)
    parser.add_argument("refs", nargs="*", metavar="REF",
                        **kit.hint(Hint.RUNNING_REF_OR_JOB), help=REF_OR_JOB)
    parser.add_argument("--all", action="store_true",
                        help="every running process on the target nodes")
    add_nodeset(parser, kit)
    return parser


def _kill_parser(kit: Kit) -> argparse.ArgumentParser:
    parser = _signal_parser(kit, "kill", "Signal processes (SIGINT unless -s).")
    parser.add_argument("-s", dest="signum", type=signal_arg, default=2, metavar="SIGNAL",
                        help="signal name or number (default INT)")
    return parser


def _refs_or_every(args: argparse.Namespace, every: bool, flag: str) -> None:
    """REF... or ``flag`` (with -w), not both and not neither."""
    if every == bool(args.refs):
        raise UsageError(f"give REF... or {flag}")
    if args.nodeset and not every:
        raise UsageError(f"-w goes with {flag}")


def _send_signal(args: argparse.Namespace, backend: Backend, signum: int) -> Report:
    _refs_or_every(args, args.all, "--all")
    errors: list[str] = []
    result: Any
    if args.all:
        # The group is the result, so a node that could not be reached is in it too.
        result = backend.call("signal_all", {"nodeset": args.nodeset, "signum": signum})
        outcomes = [o for name in result.succeeded for o in result.results[name]]
        errors = render.failure_lines(result)
        failed = bool(result.errors)
    else:
        result = outcomes = backend.call("signal", {"refs": args.refs, "signum": signum})
        failed = False
    rendered = render.signal_table(outcomes, signal_name(signum))
    return Report(result, render.Rendered(rendered.text, errors + rendered.errors),
                  failed or not all(o.ok for o in outcomes))


def _kill(args: argparse.Namespace, backend: Backend, _out: Output) -> Report:
    return _send_signal(args, backend, args.signum)


def _skill(args: argparse.Namespace, backend: Backend, _out: Output) -> Report:
    return _send_signal(args, backend, 9)


def _forget_parser(kit: Kit) -> argparse.ArgumentParser:
    parser = kit.parser(
        "forget", "Drop ended processes from the nodes' tables and journals (their logs "
        "stay). A client also forgets its oldest ended processes by itself beyond its "
        "--keep-ended limit.")
    parser.add_argument("refs", nargs="*", metavar="REF", **kit.hint(Hint.ANY_REF),
                        help="NODE:PID of an ended process, or NODE: a GONE node, no longer "
                             "expected back")
    parser.add_argument("--all-ended", action="store_true",
                        help="every ended process on the target nodes")
    add_nodeset(parser, kit)
    return parser


def _forget(args: argparse.Namespace, backend: Backend, _out: Output) -> Report:
    _refs_or_every(args, args.all_ended, "--all-ended")
    nodes = [ref for ref in args.refs if ":" not in ref]
    if nodes:
        lines, errors = [], []
        for name in nodes:
            try:
                backend.call("forget_node", {"name": name})
            except CorralError as exc:
                if exc.code is ErrorCode.DISCONNECTED:  # no master to ask: not this node's
                    raise
                errors.append(f"error: {exc.message}")
            else:
                lines.append(f"{name}  forgotten")
        args.refs = [ref for ref in args.refs if ":" in ref]
        if not args.refs and not args.all_ended:
            return Report({"forgotten": [n for n in nodes if f"{n}  forgotten" in lines]},
                          render.Rendered("\n".join(lines), errors), bool(errors))
    if args.all_ended:
        group = backend.call("forget_ended", {"nodeset": args.nodeset})
        return Report(group, render.forgotten_counts(group), bool(group.errors))
    outcomes = backend.call("forget", {"refs": args.refs})
    return Report(outcomes, render.outcome_table(outcomes, lambda _outcome: "forgotten"),
                  not all(o.ok for o in outcomes))


def _rusage_parser(kit: Kit) -> argparse.ArgumentParser:
    parser = kit.parser("getrusage", "Resource usage of processes on nodes.")
    add_nodeset(parser, kit)
    return parser


def _rusage(args: argparse.Namespace, backend: Backend, _out: Output) -> Report:
    group = backend.call("rusage", {"nodeset": args.nodeset})
    return Report(group, render.rusage_tables(group), bool(group.errors))


def _log_parser(kit: Kit) -> argparse.ArgumentParser:
    parser = kit.parser("log", "Show the log of a process, or of every process of a job "
                        "(J12: in rank order, each line prefixed with its NODE:PID).")
    parser.add_argument("ref", metavar="REF", **kit.hint(Hint.ANY_REF_OR_JOB),
                        help=REF_OR_JOB)
    parser.add_argument("-n", dest="lines", type=count, default=20, metavar="LINES",
                        help="how many lines from the end (default 20; 0: all)")
    parser.add_argument("-f", dest="follow", action="store_true",
                        help="follow until the process ends or Ctrl-C")
    parser.add_argument("--save", metavar="LOCAL_FILE", **kit.hint(Hint.LOCAL_PATH),
                        help="fetch the whole log into LOCAL_FILE on this machine instead "
                             "of showing its tail")
    return parser


def _save_log(backend: Backend, ref: str, target: Path, follow: bool) -> Report:
    """The whole log, however big, into a local file: logs live outside the work folder
    that pull reaches. Written beside the target and renamed, so a failed or cancelled
    fetch leaves no half file under that name."""
    temp = target.with_name(f".{target.name}.part")
    size = 0
    try:
        with open(temp, "wb") as out:
            def write(chunk: LogChunk) -> None:
                nonlocal size
                out.write(chunk.data)
                size += len(chunk.data)

            backend.call("log", {"ref": ref, "lines": None, "follow": follow}, write)
        os.replace(temp, target)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise CorralError(f"cannot write {target}: {exc.strerror or exc}") from None
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return Report({"ref": ref, "path": str(target), "bytes": size},
                  render.Rendered(f"saved {size:,} bytes of {ref}'s log to {target}", []),
                  False)


def _log(args: argparse.Namespace, backend: Backend, out: Output) -> Report:
    if looks_like_job(args.ref) and "." not in args.ref:
        if args.follow or args.save is not None:
            raise UsageError(f"log -f and --save take one process: give its NODE:PID or "
                             f"{args.ref}.RANK")
        view, errors = job_log(backend, args.ref, args.lines, out.log_data)
        return Report(view, render.Rendered("", errors), bool(errors))
    if looks_like_job(args.ref):  # one process of a job: J12.3
        (member,) = backend.call("job_members", {"job": args.ref})
        if member.unreachable is not None:
            raise CorralError(f"{member.ref}: {member.unreachable}")
        args.ref = member.ref
    if args.save is not None:
        return _save_log(backend, args.ref, Path(args.save), args.follow)
    shown = LogTail()
    ended = False

    def show(chunk: LogChunk) -> None:
        shown.add(chunk.data)
        out.log_data(chunk)

    try:
        ended = backend.call("log", {"ref": args.ref, "lines": args.lines,
                                     "follow": args.follow}, show)
    except KeyboardInterrupt:
        if not args.follow:
            raise
        # Ctrl-C is how one stops following
    return Report(shown.view(args.ref, ended), None, False)


def _wait_parser(kit: Kit) -> argparse.ArgumentParser:
    parser = kit.parser(
        "wait", "Wait for processes to end. With a job, the exit status is the job's: 0 "
        "only if every process exited 0, else the worst (an exit code, 128 + a signal, 127 "
        "never started, 124 still running at --timeout, 255 lost or not known); with "
        "NODE:PID only, 1 if any did not exit 0. A process whose node goes GONE meanwhile "
        "is reported lost.")
    parser.add_argument("refs", nargs="+", metavar="REF",
                        **kit.hint(Hint.RUNNING_REF_OR_JOB), help=REF_OR_JOB)
    parser.add_argument("--timeout", type=seconds, metavar="S",
                        help="give up after S seconds (default: wait forever)")
    return parser


def _wait(args: argparse.Namespace, backend: Backend, _out: Output) -> Report:
    results = backend.call("wait", {"refs": args.refs, "timeout": args.timeout})
    failed = not all(r.ok for r in results)
    if not any(looks_like_job(word) for word in args.refs):
        return Report(results, render.wait_table(results), failed)
    status = overall_status([r.status for r in results])
    return Report(results, render.wait_table(results, status), status != 0, status)


def _run_parser(kit: Kit) -> argparse.ArgumentParser:
    parser = kit.parser("run", RUN_DESCRIPTION, epilog=PIPE_RULE)
    add_nodeset(parser, kit)
    parser.add_argument("--timeout", type=seconds, default=DEFAULT_RUN_TIMEOUT, metavar="S",
                        help=f"default {DEFAULT_RUN_TIMEOUT:g}")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND")
    return parser


def _run(args: argparse.Namespace, backend: Backend, _out: Output) -> Report:
    """``args.typed`` is the command as the console's operator typed it; without it (the
    CLI) the words are joined with spaces."""
    command = getattr(args, "typed", None)
    if command is None:
        command = " ".join(program_words(args.command))
    if not command.strip():
        raise UsageError("no command given: run [-w NODESET] -- COMMAND")
    return run_shell(backend, args.nodeset, command, args.timeout,
                     color=getattr(args, "color", True))


def run_shell(backend: Backend, nodeset: str | None, command: str, timeout: float,
              color: bool = True) -> Report:
    group = backend.call("run", {"nodeset": nodeset, "command": command, "timeout": timeout})
    return run_outcome(group, color)


def run_outcome(group: GroupResult[Any], color: bool) -> Report:
    """A run's (or a script's) report: failed unless every node ran it and exited 0."""
    failed = bool(group.errors) or not all(r.ok for r in group.results.values())
    return Report(group, render.run_report(group, color=color), failed)


def _script_parser(kit: Kit) -> argparse.ArgumentParser:
    parser = kit.parser(
        "script", "Push a local script to the nodes and run it there as one job, output and "
        "summary as run. It lands in each node's work folder under .corral/scripts/ (mode "
        "0700, a name of its own), runs from the work folder under the node's rules (a node "
        "with an allow-list refuses it), and is removed once it has ended. " + PLACEHOLDERS
        + " in ARGS.")
    add_nodeset(parser, kit)
    parser.add_argument("--timeout", type=seconds, default=DEFAULT_RUN_TIMEOUT, metavar="S",
                        help=f"default {DEFAULT_RUN_TIMEOUT:g}")
    parser.add_argument("file", metavar="LOCAL_FILE", **kit.hint(Hint.LOCAL_PATH),
                        help="the script (with its #! line) on this machine")
    parser.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS",
                        help="its arguments")
    return parser


def _script(args: argparse.Namespace, backend: Backend, _out: Output) -> Report:
    group = backend.call("script", {"nodeset": args.nodeset, "local_file": _local(args.file),
                                    "args": program_words(args.args),
                                    "timeout": args.timeout})
    return run_outcome(group, getattr(args, "color", True))


def _copy_parser(kit: Kit) -> argparse.ArgumentParser:
    parser = kit.parser("copy", "Copy local files to nodes.")
    add_nodeset(parser, kit)
    parser.add_argument("-r", dest="recursive", action="store_true", help="folders too")
    add_follow(parser)
    parser.add_argument("--star", action="store_true",
                        help="send to each node from the master, not through a chain of them")
    parser.add_argument("sources", nargs="+", metavar="SRC", **kit.hint(Hint.LOCAL_PATH))
    parser.add_argument("dest", metavar="DEST",
                        help="path on the nodes, relative to their work folder; "
                             + FILE_PLACEHOLDERS)
    return parser


def add_follow(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-L", dest="follow", action="store_true",
                        help="follow links inside folders (copy what they point to)")


def _local(path: str) -> str:
    """A local path as the master reads it: the master may run in another folder, so a
    relative path is made absolute here, keeping a trailing slash (it means a folder)."""
    absolute = os.path.abspath(path)
    return absolute + "/" if path.endswith("/") and absolute != "/" else absolute


def _transfer_report(group: GroupResult[Any]) -> Report:
    return Report(group, render.transfer_report(group), bool(group.errors))


def _copy(args: argparse.Namespace, backend: Backend, out: Output) -> Report:
    group = backend.call("copy", {"nodeset": args.nodeset,
                                  "sources": [_local(s) for s in args.sources],
                                  "dest": args.dest, "recursive": args.recursive,
                                  "follow": args.follow, "star": args.star},
                         out.progress)
    return _transfer_report(group)


def _pull_parser(kit: Kit) -> argparse.ArgumentParser:
    parser = kit.parser("pull", "Fetch files from nodes.")
    add_nodeset(parser, kit)
    add_follow(parser)
    parser.add_argument("remote", nargs="+", metavar="REMOTE_PATH",
                        help="on the nodes; " + FILE_PLACEHOLDERS)
    parser.add_argument("local_dir", metavar="LOCAL_DIR", **kit.hint(Hint.LOCAL_PATH),
                        help="each node's files land in LOCAL_DIR/NODE/")
    return parser


def _pull(args: argparse.Namespace, backend: Backend, out: Output) -> Report:
    group = backend.call("pull", {"nodeset": args.nodeset, "remote_paths": args.remote,
                                  "local_dir": _local(args.local_dir),
                                  "follow": args.follow}, out.progress)
    return _transfer_report(group)


def _remove_parser(kit: Kit) -> argparse.ArgumentParser:
    parser = kit.parser("remove", "Remove files on nodes.")
    add_nodeset(parser, kit)
    parser.add_argument("-r", dest="recursive", action="store_true",
                        help="folders and everything in them")
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="relative to the work folder; " + FILE_PLACEHOLDERS)
    return parser


def _remove(args: argparse.Namespace, backend: Backend, _out: Output) -> Report:
    group = backend.call("remove", {"nodeset": args.nodeset, "paths": args.paths,
                                    "recursive": args.recursive})
    failed = bool(group.errors) or not all(o.ok for r in group.results.values() for o in r)
    return Report(group, render.remove_report(group), failed)


ENV_NOTE = ("Entries go into every later exec and run (and script), beneath the command's "
            "own --env; kept in the master's state folder across restarts. CORRAL_* "
            "variables of a job cannot be set.")


def _setenv_parser(kit: Kit) -> argparse.ArgumentParser:
    parser = kit.parser("setenv", "Add or replace global environment entries. " + ENV_NOTE)
    parser.add_argument("pairs", nargs="+", type=env_pair, metavar="K=V",
                        help="a name (letters, digits, _) and its value")
    return parser


def _setenv(args: argparse.Namespace, backend: Backend, _out: Output) -> Report:
    entries = backend.call("setenv", {"pairs": dict(args.pairs)})
    return Report(entries, render.Rendered("", []), False)


def _unsetenv_parser(kit: Kit) -> argparse.ArgumentParser:
    parser = kit.parser("unsetenv", "Remove global environment entries (a name not set is "
                        "no error). " + ENV_NOTE)
    parser.add_argument("names", nargs="+", metavar="K")
    return parser


def _unsetenv(args: argparse.Namespace, backend: Backend, _out: Output) -> Report:
    entries = backend.call("unsetenv", {"names": args.names})
    return Report(entries, render.Rendered("", []), False)


def _env_parser(kit: Kit) -> argparse.ArgumentParser:
    return kit.parser("env", "Show the global environment, K=V a line. " + ENV_NOTE + " (To "
                      "see a node's own environment: run -- env.)")


def _env(_args: argparse.Namespace, backend: Backend, _out: Output) -> Report:
    entries = backend.call("env", {})
    return Report(entries, render.environment_lines(entries), False)


def _select_parser(kit: Kit) -> argparse.ArgumentParser:
    parser = kit.parser(
        "select", "Print a node set, best first by a figure of the nodes' latest heartbeat, "
        "for -w: exec -w \"$(corral select --by load -n 4)\" -- ... Fails when fewer "
        "than -n nodes (or none) are in the state.")
    parser.add_argument("--by", choices=list(RANKINGS),
                        help="load: lowest 1-minute load first; mem: most available "
                             "memory; disk: most free disk; rtt: quickest to answer the "
                             "master (default: node order)")
    parser.add_argument("-n", dest="count", type=positive_int, metavar="K",
                        help="only the best K")
    parser.add_argument("--state", type=_state_name, choices=STATE_CHOICES, default="READY",
                        help="nodes in this state (default READY; any: all, ranked "
                             "with MISSING nodes after the live ones and GONE nodes last, "
                             "whatever their last figures)")
    parser.add_argument("--count", dest="how_many", action="store_true",
                        help="print how many nodes there are instead of their names")
    return parser


def _state_name(text: str) -> str:
    return "any" if text.lower() == "any" else text.upper()


def _select(args: argparse.Namespace, backend: Backend, _out: Output) -> Report:
    ranked = pick(backend.call("nodes", {}), args.by, args.state)
    chosen = [node.name for node in ranked[:args.count]]
    where = "known" if args.state == "any" else args.state
    if args.how_many:
        return Report({"count": len(chosen), "nodes": chosen},
                      render.Rendered(str(len(chosen)), []), False)
    errors = []
    if not chosen:
        errors.append(f"error: no {where} nodes")
    elif args.count is not None and len(chosen) < args.count:
        errors.append(f"error: only {len(chosen)} {where} node"
                      f"{'s' if len(chosen) > 1 else ''}, {args.count} wanted")
    return Report({"count": len(chosen), "nodes": chosen},
                  render.Rendered(",".join(chosen), errors), bool(errors))


def _jobs_parser(kit: Kit) -> argparse.ArgumentParser:
    return kit.parser("jobs", "List the jobs: every exec, run and script is one (the master "
                      f"remembers the last {KEEP_JOBS:,}, across restarts). Per job: its "
                      "command, nodes and processes, how many run and have ended, and the "
                      "worst exit status so far.")


def _jobs(_args: argparse.Namespace, backend: Backend, _out: Output) -> Report:
    views = backend.call("jobs", {})
    return Report(views, render.jobs_table(views), False)


COMMANDS: dict[str, Command] = {command.name: command for command in [
    Command("list", "Show the nodes and their latest figures.", _list_parser, _list),
    Command("exec", "Start a program on nodes; its output goes to a log file there.",
            _exec_parser, _exec),
    Command("pid", "Show the processes started on nodes and their states.", _pid_parser,
            _pid),
    Command("kill", "Send SIGINT (or -s SIGNAL) to processes: REF... or --all [-w NODESET].",
            _kill_parser, _kill),
    Command("sKill", "Send SIGKILL to processes: REF... or --all [-w NODESET].",
            lambda kit: _signal_parser(kit, "sKill", "Kill processes with SIGKILL."), _skill),
    Command("forget", "Drop ended processes from the tables: REF... or --all-ended "
            "[-w NODESET].", _forget_parser, _forget),
    Command("getrusage", "Resource usage: RUSAGE_CHILDREN totals per node, then each "
            "process.", _rusage_parser, _rusage),
    Command("log", "Show the tail of a process's log (stdout and stderr, in order).",
            _log_parser, _log),
    Command("wait", "Wait until each process (or job) has ended; fails unless all exited 0.",
            _wait_parser, _wait),
    Command("jobs", "List the jobs (every exec and run) and how their processes stand.",
            _jobs_parser, _jobs),
    Command("setenv", "Add global environment entries K=V for every later exec and run.",
            _setenv_parser, _setenv),
    Command("unsetenv", "Remove global environment entries.", _unsetenv_parser, _unsetenv),
    Command("env", "Show the global environment.", _env_parser, _env),
    Command("select", "Print the best nodes by load, memory, disk or round-trip time, for "
            "-w.", _select_parser, _select),
    Command("run", "Run a command through /bin/sh -c on nodes and show each node's output.",
            _run_parser, _run),
    Command("script", "Push a local script and run it on nodes as one job; output as run.",
            _script_parser, _script),
    Command("copy", "Copy local files (folders with -r) to DEST on every target node, as cp "
            "does.", _copy_parser, _copy),
    Command("pull", "Fetch files or folders from nodes into LOCAL_DIR/<node>/.", _pull_parser,
            _pull),
    Command("remove", "Remove files (folders with -r) on nodes.", _remove_parser, _remove),
]}


def _add_sharing_commands() -> None:
    from master.front.sharing_commands import SHARING_COMMANDS  # they build on this module

    COMMANDS.update((command.name, command) for command in SHARING_COMMANDS)


_add_sharing_commands()
