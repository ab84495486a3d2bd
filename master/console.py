"""The operator's console (cmd2 4.x): parse a command, make one call, render a table.

Each command is a shared definition (``master.front.commands``), the same the ``corral``
CLI uses; this module holds the application: where the calls go (the engine in this
process, or a master at the other end of the control socket), notices, the one place
failures are reported, and the passthrough. It does no work of its own.
Structured results go to ``last_result`` for scripts and tests; a failed command sets a
non-zero ``exit_code`` that the master exits with.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import cmd2
from cmd2 import Cmd2Style
from cmd2.exceptions import Cmd2ArgparseError, Cmd2ShlexError

from common.errors import CorralError
from common.text import printable_bytes
from master.console_args import CATEGORY
from master.console_commands import CorralCommands
from master.console_text import typed_line
from master.events import Event
from master.front import render
from master.front.commands import DEFAULT_RUN_TIMEOUT, PIPE_RULE, Command, run_shell
from master.front.results import LogChunk, Progress
from master.notices import LEVELS, Notices
from master.passthrough import on_off, refusal

if TYPE_CHECKING:
    from master.api import MasterAPI

log = logging.getLogger("corral.master.console")
PROGRESS_AFTER = 0.5  # seconds before a transfer shows a progress line


class CorralConsole(cmd2.Cmd):
    def __init__(self, api: MasterAPI | Any, interactive: bool, passthrough: bool = True,
                 **kwargs: Any) -> None:
        """``api``: the engine in this process (a ``MasterAPI``), or any backend of
        ``master.front.ops`` with a ``subscribe`` (the control socket's)."""
        if hasattr(api, "call"):
            backend = api
        else:
            from master.local import LocalBackend  # the engine: only where it runs
            backend = LocalBackend(api)
        self.passthrough = passthrough
        # No terminators: a ';' belongs to the shell command it is typed in (run, or any
        # other word), never silently ends the line.
        super().__init__(allow_cli_args=False, auto_suggest=False, terminators=[],
                         command_sets=[CorralCommands()], **kwargs)
        self.backend = backend  # after cmd2 has looked over this object's attributes
        self.prompt = "corral> "
        self.intro = "corral master. Type help for the commands, quit to leave."
        self.default_category = CATEGORY
        self._interactive = interactive
        self.on_hangup: Callable[[], None] | None = None  # what SIGHUP does, if anything
        self._person_at_prompt = False  # a person's quit ends well, whatever failed before
        self.commands_run = 0
        self.notices = Notices()
        self._flush_lock = threading.Lock()
        self._flush_timer: threading.Timer | None = None
        self.add_settable(cmd2.Settable(
            "notices", str, "process ends shown above the prompt: all (bursts of exit 0 "
            "summarised per node), failures, or off", self.notices,
            settable_attrib_name="level", choices=LEVELS))
        # cmd2's own tools that an operator of corral does not need in the command list.
        self.hidden_commands.extend(["alias", "macro", "run_pyscript", "edit", "shortcuts"])
        self.add_settable(cmd2.Settable(
            "passthrough", on_off, "run an unknown word as `run -- WORDS` on "
            "every READY node (on/off)", self))

    def termination_signal_handler(self, signum: int, frame: Any) -> None:
        """cmd2 ends the program on SIGHUP; corral's master re-reads its token and reopens
        its log instead (a closed terminal still ends the loop: its input ends)."""
        if signum == signal.SIGHUP and self.on_hangup is not None:
            self.on_hangup()
            return
        super().termination_signal_handler(signum, frame)

    def preloop(self) -> None:
        # Alerts are drained only while a prompt is shown: batch runs never subscribe, and
        # commands given on the command line have already reported what they saw.
        if self._interactive:
            self.backend.subscribe(self._alert)
            self._person_at_prompt = True

    def _alert(self, event: Event) -> None:
        """Called on the hub thread: show what is due now, and flush a gathered burst of
        successful ends a moment later, from a timer thread."""
        now = time.monotonic()
        for line in self.notices.offer(event, now):
            self.add_alert(msg=line)
        wait = self.notices.due(now)
        with self._flush_lock:
            if wait is not None and self._flush_timer is None:
                self._flush_timer = threading.Timer(wait, self._flush_notices)
                self._flush_timer.daemon = True
                self._flush_timer.start()

    def _flush_notices(self) -> None:
        with self._flush_lock:
            self._flush_timer = None
        for line in self.notices.flush():
            self.add_alert(msg=line)

    # --- performing a shared command ---------------------------------------------------

    def perform(self, command: Command, args: Any) -> None:
        self._progress_shown = False
        try:
            report = command.perform(args, self.backend, self)
        finally:
            if self._progress_shown:
                sys.stderr.write("\n")
        self.last_result = report.result
        if report.rendered is not None:
            self.show(report.rendered)
        if report.failed:
            self.exit_code = report.status or 1

    def progress(self, progress: Progress) -> None:
        """A progress line on stderr, redrawn in place, for transfers that take a while
        (called on the hub thread in this process, or the reading one)."""
        if sys.stderr.isatty() and progress.elapsed >= PROGRESS_AFTER:
            sys.stderr.write("\r" + render.progress_line(progress) + "\x1b[K")
            sys.stderr.flush()
            self._progress_shown = True

    def record(self, line: str, _value: Any) -> None:
        self.log_data(LogChunk((line + "\n").encode(), 0, False, False))

    def log_data(self, chunk: LogChunk) -> None:
        """On a terminal, the log's text with control characters escaped (a process must
        not drive the operator's screen); redirected, its bytes as they are, as cat would
        write them."""
        if not chunk.data:
            return
        stream = self.stdout
        binary = getattr(stream, "buffer", None)
        if binary is None or stream.isatty():
            stream.write(printable_bytes(chunk.data))
            stream.flush()
            return
        stream.flush()  # what was written as text before goes first
        binary.write(chunk.data)
        binary.flush()

    # --- one place for failures ---------------------------------------------------------

    def show(self, report: render.Rendered) -> None:
        """A report on stdout, its errors on stderr (one line each)."""
        if report.text:
            self.poutput(report.text)
        for line in report.errors:
            self.perror(line)

    def fail(self, message: str) -> None:
        self.perror(f"error: {message}")

    def perror(self, *objects: Any, style: Any = Cmd2Style.ERROR, **kwargs: Any) -> None:
        """Whatever is reported as an error, by corral or by cmd2's own commands (``set``,
        ``help``, ``run_script``, ``alias``), fails the command and so the batch. Warnings
        and ``set timing``'s figure are not failures."""
        timing = bool(objects) and str(objects[0]).startswith("Elapsed: ")
        if style is not Cmd2Style.WARNING and not timing:
            self.exit_code = 1
        super().perror(*objects, style=style, **kwargs)

    def postcmd(self, stop: bool, statement: Any) -> bool:
        # cmd2's shell keeps the local command's status in last_result and reports nothing.
        status = self.last_result
        if (getattr(statement, "command", "") == "shell" and isinstance(status, int)
                and not isinstance(status, bool) and status != 0):
            self.fail(f"shell: exit status {status}")
        return stop

    def _input_line_to_statement(self, line: str) -> Any:
        # cmd2 reports a line it cannot split (an unclosed quote) and goes on with status
        # 0; a line that ran nothing is a failed command.
        try:
            return super()._input_line_to_statement(line)
        except Cmd2ShlexError:
            self.exit_code = 1
            raise

    def onecmd(self, statement: Any, *, add_to_history: bool = True) -> bool:
        if getattr(statement, "command", statement) != "_eof":  # cmd2's end of input
            self.commands_run += 1
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
        except Exception as exc:
            # Not an error corral expected: still one line and a failed status; the
            # traceback goes to the master's log (and to the screen with ``set debug on``).
            self.last_result = None
            command = getattr(statement, "command", "") or str(statement).split(" ")[0]
            log.exception("console command %r failed", command)
            self.fail(f"{command}: {type(exc).__name__}: {exc}")
            if self.debug:
                self.pexcept(exc)
            return False

    def default(self, statement: Any) -> bool | None:
        """Any other word runs as a shell command on every READY node, as typed, unless it
        looks like a mistyped command or the passthrough is off."""
        refused = refusal(statement.command, self.get_visible_commands(), self.passthrough)
        if refused is not None:
            self.last_result = None
            self.fail(refused)
            return None
        report = run_shell(self.backend, None, typed_line(self.statement_parser, statement),
                           DEFAULT_RUN_TIMEOUT)
        self.last_result = report.result
        assert report.rendered is not None
        self.show(report.rendered)
        if report.failed:
            self.exit_code = 1
        return None

    # --- commands -------------------------------------------------------------------------

    def do_help(self, args: Any) -> None:
        """List the commands, or show help on one."""
        super().do_help(args)
        if not str(args).strip():
            self.poutput("Any other word runs as a shell command on every READY node, as "
                         "run -- WORDS does.\n" + PIPE_RULE)

    @cmd2.with_category(CATEGORY)
    def do_h(self, args: Any) -> None:
        """Same as help."""
        self.do_help(args)

    @cmd2.with_category(CATEGORY)
    def do_exit(self, _: Any) -> bool:
        """Leave the console. The master's own console stops the master (clients keep
        retrying until one comes back); one attached with `corral console` leaves it
        running."""
        if self._person_at_prompt:
            self.exit_code = 0  # failed commands were reported as they happened
        return True

    @cmd2.with_category(CATEGORY)
    def do_quit(self, args: Any) -> bool:
        """Same as exit."""
        return self.do_exit(args)
