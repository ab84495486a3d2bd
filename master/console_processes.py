"""Console commands for processes: exec, pid, kill, sKill, getrusage, log, wait, run."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import cmd2
from cmd2 import Cmd2ArgumentParser, with_argparser

from common.errors import CorralError
from common.procs import signal_name
from common.text import printable_bytes
from master.console_args import (
    ConsoleCommands,
    add_nodeset,
    all_ref_choices,
    count,
    env_pair,
    positive_int,
    program_words,
    ref_choices,
    seconds,
    signal_arg,
    signal_parser,
)
from master.console_text import typed_tail
from master.front import render
from master.logview import LogTail
from master.selection import STATES, select

DEFAULT_RUN_TIMEOUT = 30.0
PIPE_RULE = ("An unquoted | or > (and what follows it) is the console's own: it pipes or "
             "redirects the report on this machine. To send them to the nodes, give them to "
             "a shell there: run -- sh -c 'ls | wc -l > count'.")


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
        self.app.show(render.exec_table(group))
        spawn_failed = [n for n, infos in group.results.items() if any(not i.pid for i in infos)]
        if group.errors or spawn_failed:
            self.app.exit_code = 1

    pid_parser = Cmd2ArgumentParser(description="Show the processes started on nodes.")
    add_nodeset(pid_parser)
    pid_parser.add_argument("--state", choices=STATES,
                            help="only running ones, ended ones, or failed ones (ended "
                                 "otherwise than by exit 0)")
    pid_parser.add_argument("--program", metavar="GLOB",
                            help="only those whose program (name or path) or command line "
                                 "matches GLOB, e.g. 'sleep*'")
    pid_parser.add_argument("--last", type=positive_int, metavar="N",
                            help="only the N started last (on all the nodes together)")

    @with_argparser(pid_parser)
    def do_pid(self, args: argparse.Namespace) -> None:
        """Show the processes started on nodes and their states."""
        group = select(self.app.api.processes(args.nodeset), args.state, args.program,
                       args.last)
        self.app.last_result = group
        self.app.show(render.process_table(group, time.time()))
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

    def _refs_or_every(self, args: argparse.Namespace, every: bool, flag: str) -> bool:
        """REF... or ``flag`` (with -w), not both and not neither; says so if not."""
        if every == bool(args.refs):
            self.app.fail(f"give REF... or {flag}")
            return False
        if args.nodeset and not every:
            self.app.fail(f"-w goes with {flag}")
            return False
        return True

    def _signal(self, args: argparse.Namespace, signum: int) -> None:
        if not self._refs_or_every(args, args.all, "--all"):
            return
        if args.all:
            group = self.app.api.signal_all(args.nodeset, signum)
            outcomes = [o for name in group.succeeded for o in group.results[name]]
            for line in render.failure_lines(group):
                self.app.perror(line)
            failed = bool(group.errors)
        else:
            outcomes = self.app.api.signal(args.refs, signum)
            failed = False
        self.app.last_result = outcomes
        self.app.show(render.signal_table(outcomes, signal_name(signum)))
        if failed or not all(o.ok for o in outcomes):
            self.app.exit_code = 1

    forget_parser = Cmd2ArgumentParser(
        description="Drop ended processes from the nodes' tables and journals (their logs "
                    "stay). A client also forgets its oldest ended processes by itself "
                    "beyond its --keep-ended limit.")
    forget_parser.add_argument("refs", nargs="*", metavar="REF",
                               choices_provider=all_ref_choices, help="NODE:PID of an ended "
                               "process, or NODE: a GONE node, no longer expected back")
    forget_parser.add_argument("--all-ended", action="store_true",
                               help="every ended process on the target nodes")
    add_nodeset(forget_parser)

    @with_argparser(forget_parser)
    def do_forget(self, args: argparse.Namespace) -> None:
        """Drop ended processes from the tables: REF... or --all-ended [-w NODESET]."""
        if not self._refs_or_every(args, args.all_ended, "--all-ended"):
            return
        nodes = [ref for ref in args.refs if ":" not in ref]
        if nodes:
            self._forget_nodes(nodes)
            args.refs = [ref for ref in args.refs if ":" in ref]
            if not args.refs and not args.all_ended:
                return
        if args.all_ended:
            group = self.app.api.forget_ended(args.nodeset)
            self.app.last_result = group
            self.app.show(render.forgotten_counts(group))
            failed = bool(group.errors)
        else:
            outcomes = self.app.api.forget(args.refs)
            self.app.last_result = outcomes
            self.app.show(render.outcome_table(outcomes, lambda _outcome: "forgotten"))
            failed = not all(o.ok for o in outcomes)
        if failed:
            self.app.exit_code = 1

    def _forget_nodes(self, names: list[str]) -> None:
        for name in names:
            try:
                self.app.api.forget_node(name)
            except CorralError as exc:
                self.app.fail(exc.message)
            else:
                self.app.poutput(f"{name}  forgotten")

    rusage_parser = Cmd2ArgumentParser(description="Resource usage of processes on nodes.")
    add_nodeset(rusage_parser)

    @with_argparser(rusage_parser)
    def do_getrusage(self, args: argparse.Namespace) -> None:
        """Resource usage: RUSAGE_CHILDREN totals per node, then each process."""
        group = self.app.api.rusage(args.nodeset)
        self.app.last_result = group
        self.app.show(render.rusage_tables(group))
        if group.errors:
            self.app.exit_code = 1

    log_parser = Cmd2ArgumentParser(description="Show the log of a process.")
    log_parser.add_argument("ref", metavar="REF", choices_provider=all_ref_choices,
                            help="NODE:PID")
    log_parser.add_argument("-n", dest="lines", type=count, default=20, metavar="LINES",
                            help="how many lines from the end (default 20; 0: all)")
    log_parser.add_argument("-f", dest="follow", action="store_true",
                            help="follow until the process ends or Ctrl-C")
    log_parser.add_argument("--save", metavar="LOCAL_FILE", completer=cmd2.Cmd.path_complete,
                            help="fetch the whole log into LOCAL_FILE on this machine "
                            "instead of showing its tail")

    @with_argparser(log_parser)
    def do_log(self, args: argparse.Namespace) -> None:
        """Show the tail of a process's log (stdout and stderr, in order)."""
        if args.save is not None:
            self._save_log(args.ref, Path(args.save), args.follow)
            return
        shown = LogTail()
        ended = False
        try:
            for chunk in self.app.api.log_chunks(args.ref, args.lines, args.follow):
                shown.add(chunk.data)
                self._write_log(chunk.data)
                ended = chunk.ended
        except KeyboardInterrupt:
            if not args.follow:
                raise
            # Ctrl-C is how one stops following
        self.app.last_result = shown.view(args.ref, ended)

    def _save_log(self, ref: str, target: Path, follow: bool) -> None:
        """The whole log, however big, into a local file: logs live outside the work folder
        that pull reaches. Written beside the target and renamed, so a failed or cancelled
        fetch leaves no half file under that name."""
        temp = target.with_name(f".{target.name}.part")
        size = 0
        try:
            with open(temp, "wb") as out:
                for chunk in self.app.api.log_chunks(ref, None, follow):
                    out.write(chunk.data)
                    size += len(chunk.data)
            os.replace(temp, target)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            self.app.fail(f"cannot write {target}: {exc.strerror or exc}")
            return
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        self.app.last_result = {"ref": ref, "path": str(target), "bytes": size}
        self.app.poutput(f"saved {size:,} bytes of {ref}'s log to {target}")

    def _write_log(self, data: bytes) -> None:
        """On a terminal, the log's text with control characters escaped (a process must
        not drive the operator's screen); redirected, its bytes as they are, as cat would
        write them."""
        if not data:
            return
        stream = self.app.stdout
        binary = getattr(stream, "buffer", None)
        if binary is None or stream.isatty():
            stream.write(printable_bytes(data))
            stream.flush()
            return
        stream.flush()  # what was written as text before goes first
        binary.write(data)
        binary.flush()

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
        self.app.show(render.wait_table(results))
        if not all(r.ok for r in results):
            self.app.exit_code = 1

    run_parser = Cmd2ArgumentParser(
        description="Run a shell command through /bin/sh -c on nodes and show each node's "
        "output. The text after -- reaches the nodes exactly as typed (quotes, spacing, ;, "
        "&&, $, globs); so does a word that is not a console command, with what follows "
        "it (the passthrough), unless it is within an edit or two of a command (lsit: did "
        "you mean list?). `set passthrough off`, or --no-passthrough on the master, turns "
        "the passthrough off: then only run sends commands.",
        epilog=PIPE_RULE)
    add_nodeset(run_parser)
    run_parser.add_argument("--timeout", type=seconds, default=DEFAULT_RUN_TIMEOUT,
                            metavar="S", help=f"default {DEFAULT_RUN_TIMEOUT:g}")
    run_parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND")

    @with_argparser(run_parser, preserve_quotes=True)
    def do_run(self, args: argparse.Namespace) -> None:
        """Run a command through /bin/sh -c on nodes and show each node's output."""
        command = typed_tail(self.app.statement_parser, args.cmd2_statement,
                             len(args.command))
        if not command.strip():
            self.app.fail("no command given: run [-w NODESET] -- COMMAND")
            return
        self.run_shell(args.nodeset, command, args.timeout)

    def run_shell(self, nodeset: str | None, command: str, timeout: float) -> None:
        group = self.app.api.run(nodeset, command, timeout)
        self.app.last_result = group
        self.app.show(render.run_report(group, color=True))
        if group.errors or not all(r.ok for r in group.results.values()):
            self.app.exit_code = 1
