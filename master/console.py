"""The operator's console (cmd2 4.x): parse a command, make one API call, render a table.

It does no work of its own. Structured results go to ``last_result`` for scripts and
tests; a failed command sets a non-zero ``exit_code`` that the master exits with.
"""

from __future__ import annotations

import argparse
from typing import Any

import cmd2
from cmd2 import Cmd2ArgumentParser, with_argparser
from cmd2.exceptions import Cmd2ArgparseError

from common.errors import CorralError
from master import render
from master.api import MasterAPI
from master.registry import NodeEvent

CATEGORY = "corral"


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

    def preloop(self) -> None:
        # Alerts are drained only while a prompt is shown: batch runs never subscribe, and
        # commands given on the command line have already reported what they saw.
        if self._interactive:
            self.api.subscribe(self._alert)

    def _alert(self, event: NodeEvent) -> None:
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
        self.fail(f"unknown command {statement.command!r} (type help)")
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
