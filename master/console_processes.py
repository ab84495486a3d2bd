"""Console commands for processes: exec, pid, kill, sKill, getrusage, log, wait, run."""

from __future__ import annotations

import argparse
import time

from cmd2 import Cmd2ArgumentParser, with_argparser

from common.procs import signal_name
from common.text import printable_bytes
from master import render
from master.console_args import (
    ConsoleCommands,
    add_nodeset,
    env_pair,
    positive_int,
    program_words,
    ref_choices,
    seconds,
    signal_arg,
    signal_parser,
)

DEFAULT_RUN_TIMEOUT = 30.0
FOLLOW_POLL = 0.2  # seconds between reads of a followed log


class ProcessCommands(ConsoleCommands):
    exec_parser = Cmd2ArgumentParser(description="Start a program on nodes.")
    add_nodeset(exec_parser)
    exec_parser.add_argument("--cwd", metavar="DIR", help="folder, relative to the work folder")
    exec_parser.add_argument("--env", metavar="K=V", type=env_pair, action="append",
                             default=[], help="set an environment variable (repeatable)")
    exec_parser.add_argument("--stdin", metavar="FILE", type=argparse.FileType("rb"),
                             help="a local file the program reads as its stdin")
    exec_parser.add_argument("-n", dest="count", type=positive_int, default=1, metavar="COUNT",
                             help="start COUNT copies on each node (default 1)")
    exec_parser.add_argument("program", nargs=argparse.REMAINDER,
                             help="-- PROGRAM [ARGS...]")

    @with_argparser(exec_parser)
    def do_exec(self, args: argparse.Namespace) -> None:
        """Start a program on nodes; its output goes to a log file there."""
        argv = program_words(args.program)
        if not argv:
            self.app.fail("no program given: exec [-w NODESET] -- PROGRAM [ARGS...]")
            return
        stdin = None
        if args.stdin is not None:
            with args.stdin:
                stdin = args.stdin.read()
        group = self.app.api.exec(args.nodeset, argv, args.cwd, dict(args.env), stdin, args.count)
        self.app.last_result = group
        self.app.poutput(render.exec_table(group))
        spawn_failed = [n for n, infos in group.results.items() if any(not i.pid for i in infos)]
        if group.errors or spawn_failed:
            self.app.exit_code = 1

    pid_parser = Cmd2ArgumentParser(description="Show the processes started on nodes.")
    add_nodeset(pid_parser)

    @with_argparser(pid_parser)
    def do_pid(self, args: argparse.Namespace) -> None:
        """Show the processes started on nodes and their states."""
        group = self.app.api.processes(args.nodeset)
        self.app.last_result = group
        self.app.poutput(render.process_table(group, time.time()))
        if group.errors:
            self.app.exit_code = 1

    kill_parser = signal_parser("Signal processes (SIGINT unless -s).")
    kill_parser.add_argument("-s", dest="signum", type=signal_arg, default=2, metavar="SIGNAL",
                             help="signal name or number (default INT)")

    @with_argparser(kill_parser)
    def do_kill(self, args: argparse.Namespace) -> None:
        """Send SIGINT (or -s SIGNAL) to processes: REF... or --all [-w NODESET]."""
        self._signal(args, args.signum)

    skill_parser = signal_parser("Kill processes with SIGKILL.")

    @with_argparser(skill_parser)
    def do_sKill(self, args: argparse.Namespace) -> None:
        """Send SIGKILL to processes: REF... or --all [-w NODESET]."""
        self._signal(args, 9)

    def _signal(self, args: argparse.Namespace, signum: int) -> None:
        if args.all == bool(args.refs):
            self.app.fail("give REF... or --all")
            return
        if args.nodeset and not args.all:
            self.app.fail("-w goes with --all")
            return
        if args.all:
            group = self.app.api.signal_all(args.nodeset, signum)
            outcomes = [o for name in group.succeeded for o in group.results[name]]
            for name in group.failed:
                self.app.perror(f"{name}: {group.errors[name].message}")
            failed = bool(group.errors)
        else:
            outcomes = self.app.api.signal(args.refs, signum)
            failed = False
        self.app.last_result = outcomes
        self.app.poutput(render.signal_table(outcomes, signal_name(signum)))
        if failed or not all(o.ok for o in outcomes):
            self.app.exit_code = 1

    rusage_parser = Cmd2ArgumentParser(description="Resource usage of processes on nodes.")
    add_nodeset(rusage_parser)

    @with_argparser(rusage_parser)
    def do_getrusage(self, args: argparse.Namespace) -> None:
        """Resource usage: RUSAGE_CHILDREN totals per node, then each process."""
        group = self.app.api.rusage(args.nodeset)
        self.app.last_result = group
        self.app.poutput(render.rusage_tables(group))
        if group.errors:
            self.app.exit_code = 1

    log_parser = Cmd2ArgumentParser(description="Show the log of a process.")
    log_parser.add_argument("ref", metavar="REF", choices_provider=ref_choices,
                            help="NODE:PID")
    log_parser.add_argument("-n", dest="lines", type=int, default=20, metavar="LINES",
                            help="how many lines from the end (default 20; 0: all)")
    log_parser.add_argument("-f", dest="follow", action="store_true",
                            help="follow until the process ends or Ctrl-C")

    @with_argparser(log_parser)
    def do_log(self, args: argparse.Namespace) -> None:
        """Show the tail of a process's log (stdout and stderr, in order)."""
        chunk = self.app.api.log(args.ref, lines=args.lines or None)
        shown = [chunk.data]
        self._write_raw(chunk.data)
        try:
            while args.follow and not chunk.ended:
                time.sleep(FOLLOW_POLL)
                chunk = self.app.api.log(args.ref, offset=chunk.offset)
                shown.append(chunk.data)
                self._write_raw(chunk.data)
        except KeyboardInterrupt:
            pass  # Ctrl-C is how one stops following
        self.app.last_result = b"".join(shown)

    def _write_raw(self, data: bytes) -> None:
        if data:
            self.app.stdout.write(printable_bytes(data))
            self.app.stdout.flush()

    wait_parser = Cmd2ArgumentParser(description="Wait for processes to end.")
    wait_parser.add_argument("refs", nargs="+", metavar="REF", choices_provider=ref_choices,
                             help="NODE:PID")
    wait_parser.add_argument("--timeout", type=seconds, metavar="S",
                             help="give up after S seconds (default: wait forever)")

    @with_argparser(wait_parser)
    def do_wait(self, args: argparse.Namespace) -> None:
        """Wait until each process has ended; fails unless all exited 0."""
        results = self.app.api.wait(args.refs, args.timeout)
        self.app.last_result = results
        self.app.poutput(render.wait_table(results))
        if not all(r.ok for r in results):
            self.app.exit_code = 1

    run_parser = Cmd2ArgumentParser(
        description="Run a shell command on nodes.",
        epilog="A word that is not a console command runs the same way on every READY "
               "node (the passthrough), unless it is within an edit or two of a command "
               "(lsit: did you mean list?). `set passthrough off`, or --no-passthrough on "
               "the master, turns that off: then only run sends commands.")
    add_nodeset(run_parser)
    run_parser.add_argument("--timeout", type=seconds, default=DEFAULT_RUN_TIMEOUT,
                            metavar="S", help=f"default {DEFAULT_RUN_TIMEOUT:g}")
    run_parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND")

    @with_argparser(run_parser)
    def do_run(self, args: argparse.Namespace) -> None:
        """Run a command through /bin/sh -c on nodes and show each node's output."""
        words = program_words(args.command)
        if not words:
            self.app.fail("no command given: run [-w NODESET] -- COMMAND")
            return
        self.run_shell(args.nodeset, " ".join(words), args.timeout)

    def run_shell(self, nodeset: str | None, command: str, timeout: float) -> None:
        group = self.app.api.run(nodeset, command, timeout)
        self.app.last_result = group
        self.app.poutput(render.run_report(group, color=True))
        if group.errors or not all(r.ok for r in group.results.values()):
            self.app.exit_code = 1
