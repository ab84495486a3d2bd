"""The operator's console (cmd2 4.x): parse a command, make one API call, render a table.

It does no work of its own. Structured results go to ``last_result`` for scripts and
tests; a failed command sets a non-zero ``exit_code`` that the master exits with.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import cmd2
from cmd2 import Choices, Cmd2ArgumentParser, with_argparser
from cmd2.exceptions import Cmd2ArgparseError

from common.errors import CorralError
from common.procs import parse_signal, signal_name
from master import render
from master.api import MasterAPI
from master.events import Event
from master.transfers import Progress

CATEGORY = "corral"
DEFAULT_RUN_TIMEOUT = 30.0
FOLLOW_POLL = 0.2  # seconds between reads of a followed log
PROGRESS_AFTER = 0.5  # seconds before a transfer shows a progress line


def _node_choices(app: CorralConsole) -> Choices:
    return Choices.from_values(app.api.node_names())


def _ref_choices(app: CorralConsole) -> Choices:
    return Choices.from_values(app.api.running_refs())


def _signal(text: str) -> int:
    try:
        return parse_signal(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected K=V, got {text!r}")
    return key, value


def _add_nodeset(parser: Cmd2ArgumentParser) -> None:
    parser.add_argument("-w", dest="nodeset", metavar="NODESET", choices_provider=_node_choices,
                        help="target nodes, e.g. n[1-3],web* (default: every READY node)")


def _signal_parser(description: str) -> Cmd2ArgumentParser:
    parser = Cmd2ArgumentParser(description=description)
    parser.add_argument("refs", nargs="*", metavar="REF", choices_provider=_ref_choices,
                        help="NODE:PID")
    parser.add_argument("--all", action="store_true",
                        help="every running process on the target nodes")
    _add_nodeset(parser)
    return parser


def _program(words: list[str]) -> list[str]:
    return words[1:] if words[:1] == ["--"] else words


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


class CorralConsole(cmd2.Cmd):
    def __init__(self, api: MasterAPI, interactive: bool, **kwargs: Any) -> None:
        super().__init__(allow_cli_args=False, auto_suggest=False, **kwargs)
        self.api = api
        self.prompt = "corral> "
        self.intro = "corral master. Type help for the commands, quit to leave."
        self.default_category = CATEGORY
        self._interactive = interactive
        # cmd2's own tools that an operator of corral does not need in the command list.
        self.hidden_commands.extend(["alias", "macro", "run_pyscript", "edit", "shortcuts"])

    def preloop(self) -> None:
        # Alerts are drained only while a prompt is shown: batch runs never subscribe, and
        # commands given on the command line have already reported what they saw.
        if self._interactive:
            self.api.subscribe(self._alert)

    def _alert(self, event: Event) -> None:
        self.add_alert(msg=event.describe())

    # --- one place for failures ---------------------------------------------------------

    def fail(self, message: str) -> None:
        self.perror(f"error: {message}")
        self.exit_code = 1

    def onecmd(self, statement: Any, *, add_to_history: bool = True) -> bool:
        try:
            return bool(super().onecmd(statement, add_to_history=add_to_history))
        except Cmd2ArgparseError:
            self.exit_code = 1
            raise
        except CorralError as exc:
            self.last_result = None
            self.fail(exc.message)
            return False
        except KeyboardInterrupt:
            self.last_result = None
            self.fail("cancelled")
            return False

    def default(self, statement: Any) -> bool | None:
        """Any other word runs as a shell command on every READY node."""
        self._run(None, statement.command_and_args, DEFAULT_RUN_TIMEOUT)
        return None

    # --- commands -------------------------------------------------------------------------

    list_parser = Cmd2ArgumentParser(description="Show the nodes and their latest figures.")
    list_parser.add_argument("--wait", type=_positive_int, metavar="N",
                             help="first wait until N nodes are READY")
    list_parser.add_argument("--timeout", type=_seconds, metavar="S",
                             help="give up waiting after S seconds (default: wait forever)")

    @with_argparser(list_parser)
    @cmd2.with_category(CATEGORY)
    def do_list(self, args: argparse.Namespace) -> None:
        """Show the nodes and their latest figures."""
        if args.wait is not None:
            outcome = self.api.wait_ready(args.wait, args.timeout)
            self.last_result = outcome.nodes
            self.poutput(render.nodes_table(outcome.nodes))
            if not outcome.reached:
                self.fail(f"only {outcome.ready} of {outcome.wanted} nodes READY after "
                          f"{outcome.waited:.1f} s")
            return
        nodes = self.api.nodes()
        self.last_result = nodes
        self.poutput(render.nodes_table(nodes))

    @cmd2.with_category(CATEGORY)
    def do_h(self, args: Any) -> None:
        """Same as help."""
        self.do_help(args)

    @cmd2.with_category(CATEGORY)
    def do_exit(self, _: Any) -> bool:
        """Stop the master (clients keep retrying until one comes back)."""
        return True

    # --- processes ------------------------------------------------------------------------

    exec_parser = Cmd2ArgumentParser(description="Start a program on nodes.")
    _add_nodeset(exec_parser)
    exec_parser.add_argument("--cwd", metavar="DIR", help="folder, relative to the work folder")
    exec_parser.add_argument("--env", metavar="K=V", type=_env_pair, action="append",
                             default=[], help="set an environment variable (repeatable)")
    exec_parser.add_argument("--stdin", metavar="FILE", type=argparse.FileType("rb"),
                             help="a local file the program reads as its stdin")
    exec_parser.add_argument("-n", dest="count", type=_positive_int, default=1, metavar="COUNT",
                             help="start COUNT copies on each node (default 1)")
    exec_parser.add_argument("program", nargs=argparse.REMAINDER,
                             help="-- PROGRAM [ARGS...]")

    @with_argparser(exec_parser)
    @cmd2.with_category(CATEGORY)
    def do_exec(self, args: argparse.Namespace) -> None:
        """Start a program on nodes; its output goes to a log file there."""
        argv = _program(args.program)
        if not argv:
            self.fail("no program given: exec [-w NODESET] -- PROGRAM [ARGS...]")
            return
        stdin = None
        if args.stdin is not None:
            with args.stdin:
                stdin = args.stdin.read()
        group = self.api.exec(args.nodeset, argv, args.cwd, dict(args.env), stdin, args.count)
        self.last_result = group
        self.poutput(render.exec_table(group))
        spawn_failed = [n for n, infos in group.results.items() if any(not i.pid for i in infos)]
        if group.errors or spawn_failed:
            self.exit_code = 1

    pid_parser = Cmd2ArgumentParser(description="Show the processes started on nodes.")
    _add_nodeset(pid_parser)

    @with_argparser(pid_parser)
    @cmd2.with_category(CATEGORY)
    def do_pid(self, args: argparse.Namespace) -> None:
        """Show the processes started on nodes and their states."""
        group = self.api.processes(args.nodeset)
        self.last_result = group
        self.poutput(render.process_table(group, time.time()))
        if group.errors:
            self.exit_code = 1

    kill_parser = _signal_parser("Signal processes (SIGINT unless -s).")
    kill_parser.add_argument("-s", dest="signum", type=_signal, default=2, metavar="SIGNAL",
                             help="signal name or number (default INT)")

    @with_argparser(kill_parser)
    @cmd2.with_category(CATEGORY)
    def do_kill(self, args: argparse.Namespace) -> None:
        """Send SIGINT (or -s SIGNAL) to processes: REF... or --all [-w NODESET]."""
        self._signal(args, args.signum)

    skill_parser = _signal_parser("Kill processes with SIGKILL.")

    @with_argparser(skill_parser)
    @cmd2.with_category(CATEGORY)
    def do_sKill(self, args: argparse.Namespace) -> None:
        """Send SIGKILL to processes: REF... or --all [-w NODESET]."""
        self._signal(args, 9)

    def _signal(self, args: argparse.Namespace, signum: int) -> None:
        if args.all == bool(args.refs):
            self.fail("give REF... or --all")
            return
        if args.nodeset and not args.all:
            self.fail("-w goes with --all")
            return
        if args.all:
            group = self.api.signal_all(args.nodeset, signum)
            outcomes = [o for name in group.succeeded for o in group.results[name]]
            for name in group.failed:
                self.perror(f"{name}: {group.errors[name].message}")
            failed = bool(group.errors)
        else:
            outcomes = self.api.signal(args.refs, signum)
            failed = False
        self.last_result = outcomes
        self.poutput(render.signal_table(outcomes, signal_name(signum)))
        if failed or not all(o.ok for o in outcomes):
            self.exit_code = 1

    rusage_parser = Cmd2ArgumentParser(description="Resource usage of processes on nodes.")
    _add_nodeset(rusage_parser)

    @with_argparser(rusage_parser)
    @cmd2.with_category(CATEGORY)
    def do_getrusage(self, args: argparse.Namespace) -> None:
        """Resource usage: RUSAGE_CHILDREN totals per node, then each process."""
        group = self.api.rusage(args.nodeset)
        self.last_result = group
        self.poutput(render.rusage_tables(group))
        if group.errors:
            self.exit_code = 1

    log_parser = Cmd2ArgumentParser(description="Show the log of a process.")
    log_parser.add_argument("ref", metavar="REF", choices_provider=_ref_choices,
                            help="NODE:PID")
    log_parser.add_argument("-n", dest="lines", type=int, default=20, metavar="LINES",
                            help="how many lines from the end (default 20; 0: all)")
    log_parser.add_argument("-f", dest="follow", action="store_true",
                            help="follow until the process ends or Ctrl-C")

    @with_argparser(log_parser)
    @cmd2.with_category(CATEGORY)
    def do_log(self, args: argparse.Namespace) -> None:
        """Show the tail of a process's log (stdout and stderr, in order)."""
        chunk = self.api.log(args.ref, lines=args.lines or None)
        shown = [chunk.data]
        self._write_raw(chunk.data)
        try:
            while args.follow and not chunk.ended:
                time.sleep(FOLLOW_POLL)
                chunk = self.api.log(args.ref, offset=chunk.offset)
                shown.append(chunk.data)
                self._write_raw(chunk.data)
        except KeyboardInterrupt:
            pass  # Ctrl-C is how one stops following
        self.last_result = b"".join(shown)

    def _write_raw(self, data: bytes) -> None:
        if data:
            self.stdout.write(data.decode(errors="replace"))
            self.stdout.flush()

    wait_parser = Cmd2ArgumentParser(description="Wait for processes to end.")
    wait_parser.add_argument("refs", nargs="+", metavar="REF", choices_provider=_ref_choices,
                             help="NODE:PID")
    wait_parser.add_argument("--timeout", type=_seconds, metavar="S",
                             help="give up after S seconds (default: wait forever)")

    @with_argparser(wait_parser)
    @cmd2.with_category(CATEGORY)
    def do_wait(self, args: argparse.Namespace) -> None:
        """Wait until each process has ended; fails unless all exited 0."""
        results = self.api.wait(args.refs, args.timeout)
        self.last_result = results
        self.poutput(render.wait_table(results))
        if not all(r.ok for r in results):
            self.exit_code = 1

    run_parser = Cmd2ArgumentParser(description="Run a shell command on nodes.")
    _add_nodeset(run_parser)
    run_parser.add_argument("--timeout", type=_seconds, default=DEFAULT_RUN_TIMEOUT,
                            metavar="S", help=f"default {DEFAULT_RUN_TIMEOUT:g}")
    run_parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND")

    @with_argparser(run_parser)
    @cmd2.with_category(CATEGORY)
    def do_run(self, args: argparse.Namespace) -> None:
        """Run a command through /bin/sh -c on nodes and show each node's output."""
        words = _program(args.command)
        if not words:
            self.fail("no command given: run [-w NODESET] -- COMMAND")
            return
        self._run(args.nodeset, " ".join(words), args.timeout)

    def _run(self, nodeset: str | None, command: str, timeout: float) -> None:
        group = self.api.run(nodeset, command, timeout)
        self.last_result = group
        self.poutput(render.run_report(group, color=True))
        if group.errors or not all(r.ok for r in group.results.values()):
            self.exit_code = 1

    # --- files ----------------------------------------------------------------------------

    copy_parser = Cmd2ArgumentParser(description="Copy local files to nodes.")
    _add_nodeset(copy_parser)
    copy_parser.add_argument("-r", dest="recursive", action="store_true", help="folders too")
    copy_parser.add_argument("sources", nargs="+", metavar="SRC",
                             completer=cmd2.Cmd.path_complete)
    copy_parser.add_argument("dest", metavar="DEST",
                             help="path on the nodes, relative to their work folder")

    @with_argparser(copy_parser)
    @cmd2.with_category(CATEGORY)
    def do_copy(self, args: argparse.Namespace) -> None:
        """Copy local files (folders with -r) to DEST on every target node at once."""
        with self._progress() as show:
            group = self.api.copy(args.nodeset, args.sources, args.dest, args.recursive, show)
        self._report_transfer(group)

    pull_parser = Cmd2ArgumentParser(description="Fetch files from nodes.")
    _add_nodeset(pull_parser)
    pull_parser.add_argument("remote", nargs="+", metavar="REMOTE_PATH",
                             help="on the nodes; ?HOST becomes the node's name")
    pull_parser.add_argument("local_dir", metavar="LOCAL_DIR", completer=cmd2.Cmd.path_complete,
                             help="each node's files land in LOCAL_DIR/NODE/")

    @with_argparser(pull_parser)
    @cmd2.with_category(CATEGORY)
    def do_pull(self, args: argparse.Namespace) -> None:
        """Fetch files or folders from nodes into LOCAL_DIR/<node>/."""
        with self._progress() as show:
            group = self.api.pull(args.nodeset, args.remote, args.local_dir, show)
        self._report_transfer(group)

    def _report_transfer(self, group: Any) -> None:
        self.last_result = group
        self.poutput(render.transfer_report(group))
        if group.errors:
            self.exit_code = 1

    @contextlib.contextmanager
    def _progress(self) -> Iterator[Callable[[Progress], None]]:
        """A progress line on stderr, redrawn in place, for transfers that take a while."""
        shown = []
        terminal = sys.stderr.isatty()

        def show(progress: Progress) -> None:  # called on the hub thread
            if terminal and progress.elapsed >= PROGRESS_AFTER:
                sys.stderr.write("\r" + render.progress_line(progress) + "\x1b[K")
                sys.stderr.flush()
                shown.append(True)

        try:
            yield show
        finally:
            if shown:
                sys.stderr.write("\n")

    remove_parser = Cmd2ArgumentParser(description="Remove files on nodes.")
    _add_nodeset(remove_parser)
    remove_parser.add_argument("-r", dest="recursive", action="store_true",
                               help="folders and everything in them")
    remove_parser.add_argument("paths", nargs="+", metavar="PATH",
                               help="relative to the work folder; ?HOST becomes the node's name")

    @with_argparser(remove_parser)
    @cmd2.with_category(CATEGORY)
    def do_remove(self, args: argparse.Namespace) -> None:
        """Remove files (folders with -r) on nodes."""
        group = self.api.remove(args.nodeset, args.paths, args.recursive)
        self.last_result = group
        self.poutput(render.remove_report(group))
        if group.errors or not all(o.ok for r in group.results.values() for o in r):
            self.exit_code = 1
