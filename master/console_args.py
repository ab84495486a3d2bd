"""Argument types, completions and shared options of the console's commands."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from cmd2 import Choices, Cmd2ArgumentParser, CommandSet, Completions

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


def nodeset_complete(app: Any, text: str, line: str, begidx: int, endidx: int) -> Completions:
    """Node names, also after a comma: ``-w n1,n`` completes to ``n1,n2``, ``n1,n3``...
    (names already in the set are not offered again)."""
    head, sep, _last = text.rpartition(",")
    if head.count("[") != head.count("]"):
        return Completions.from_values([])  # inside a bracket range: nothing to offer
    prefix = head + sep
    taken = set(head.split(","))
    names = [prefix + name for name in app.api.node_names() if name not in taken]
    completions: Completions = app.basic_complete(text, line, begidx, endidx, names)
    return completions


def ref_choices(app: Any) -> Choices:
    return Choices.from_values(app.api.process_refs(running_only=True))


def all_ref_choices(app: Any) -> Choices:
    return Choices.from_values(app.api.process_refs(running_only=False))


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
    parser.add_argument("-w", dest="nodeset", metavar="NODESET", completer=nodeset_complete,
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


def count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value
