"""The console's side of the shared command definitions: cmd2 parsers with Tab completion
for node names, process refs and local paths."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

import cmd2
from cmd2 import Choices, Cmd2ArgumentParser, CommandSet, Completions

from master.front.commands import Hint

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
    names = [prefix + name for name in app.backend.call("node_names", {})
             if name not in taken]
    completions: Completions = app.basic_complete(text, line, begidx, endidx, names)
    return completions


def ref_choices(app: Any) -> Choices:
    return Choices.from_values(app.backend.call("process_refs", {"running_only": True}))


def all_ref_choices(app: Any) -> Choices:
    return Choices.from_values(app.backend.call("process_refs", {"running_only": False}))


def job_choices(app: Any) -> Choices:
    return Choices.from_values(app.backend.call("job_names", {}))


def ref_or_job_choices(app: Any) -> Choices:
    return Choices.from_values(app.backend.call("process_refs", {"running_only": True})
                               + app.backend.call("job_names", {}))


def any_ref_or_job_choices(app: Any) -> Choices:
    return Choices.from_values(app.backend.call("process_refs", {"running_only": False})
                               + app.backend.call("job_names", {}))


class ConsoleKit:
    """cmd2 parsers; arguments marked with a hint complete with Tab."""

    HINTS: dict[Hint, dict[str, Any]] = {
        Hint.NODES: {"completer": nodeset_complete},
        Hint.RUNNING_REF: {"choices_provider": ref_choices},
        Hint.ANY_REF: {"choices_provider": all_ref_choices},
        Hint.JOB: {"choices_provider": job_choices},
        Hint.RUNNING_REF_OR_JOB: {"choices_provider": ref_or_job_choices},
        Hint.ANY_REF_OR_JOB: {"choices_provider": any_ref_or_job_choices},
        Hint.LOCAL_PATH: {"completer": cmd2.Cmd.path_complete},
    }

    def parser(self, name: str, description: str, epilog: str | None = None
               ) -> argparse.ArgumentParser:
        return Cmd2ArgumentParser(description=description, epilog=epilog)

    def hint(self, hint: Hint) -> dict[str, Any]:
        return self.HINTS[hint]
