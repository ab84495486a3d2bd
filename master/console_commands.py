"""The console's commands, one per shared definition in ``master.front.commands``: each
parses with that definition's parser, performs it, and renders its report."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from cmd2 import Cmd2ArgumentParser, with_argparser

from master.console_args import ConsoleCommands, ConsoleKit
from master.console_text import typed_tail
from master.front.commands import COMMANDS

KIT = ConsoleKit()
PARSERS: dict[str, Cmd2ArgumentParser] = {}  # the console's parser of each shared command


def _do(name: str, preserve_quotes: bool = False) -> Callable[..., bool | None]:
    command = COMMANDS[name]

    parser = command.build(KIT)
    assert isinstance(parser, Cmd2ArgumentParser)
    PARSERS[name] = parser

    @with_argparser(parser, preserve_quotes=preserve_quotes)
    def do(self: CorralCommands, args: argparse.Namespace) -> None:
        if name == "run":
            # The command reaches the nodes as typed, not as cmd2 split it into words.
            args.typed = typed_tail(self.app.statement_parser, args.cmd2_statement,
                                    len(args.command))
        self.app.perform(command, args)

    do.__doc__ = command.summary
    do.__name__ = do.__qualname__ = f"do_{name}"  # cmd2 finds commands by name
    return do


class CorralCommands(ConsoleCommands):
    do_list = _do("list")
    do_exec = _do("exec")
    do_pid = _do("pid")
    do_kill = _do("kill")
    do_sKill = _do("sKill")
    do_forget = _do("forget")
    do_getrusage = _do("getrusage")
    do_log = _do("log")
    do_wait = _do("wait")
    do_jobs = _do("jobs")
    do_setenv = _do("setenv")
    do_unsetenv = _do("unsetenv")
    do_env = _do("env")
    do_select = _do("select")
    do_script = _do("script")
    do_run = _do("run", preserve_quotes=True)
    do_copy = _do("copy")
    do_pull = _do("pull")
    do_remove = _do("remove")
    do_var = _do("var")
    do_barrier = _do("barrier")

