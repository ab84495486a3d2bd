"""Argument types, completions and shared options of the console's commands."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from cmd2 import Choices, Cmd2ArgumentParser, CommandSet

from common.procs import parse_signal

if TYPE_CHECKING:
    from master.console import CorralConsole

CATEGORY = "corral"


class ConsoleCommands(CommandSet["CorralConsole"]):
    """A group of console commands; ``app`` is the console they run in."""

    DEFAULT_CATEGORY = CATEGORY

    @property
    def app(self) -> CorralConsole:
        return self._cmd


def node_choices(app: Any) -> Choices:
    return Choices.from_values(app.api.node_names())


def ref_choices(app: Any) -> Choices:
    return Choices.from_values(app.api.running_refs())


def signal_arg(text: str) -> int:
    try:
        return parse_signal(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected K=V, got {text!r}")
    return key, value


def add_nodeset(parser: Cmd2ArgumentParser) -> None:
    parser.add_argument("-w", dest="nodeset", metavar="NODESET", choices_provider=node_choices,
                        help="target nodes, e.g. n[1-3],web* (default: every READY node)")


def signal_parser(description: str) -> Cmd2ArgumentParser:
    parser = Cmd2ArgumentParser(description=description)
    parser.add_argument("refs", nargs="*", metavar="REF", choices_provider=ref_choices,
                        help="NODE:PID")
    parser.add_argument("--all", action="store_true",
                        help="every running process on the target nodes")
    add_nodeset(parser)
    return parser


def program_words(words: list[str]) -> list[str]:
    return words[1:] if words[:1] == ["--"] else words


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value
