"""The console command reference in README.md is what the parsers say (`make docs`)."""

from __future__ import annotations

import argparse
import io
from unittest import mock

import pytest

from master.console import CorralConsole
from master.console_commands import PARSERS
from master.reference import BEGIN, END, console_parsers, reference, usage
from tests.harness import ROOT


def test_the_committed_reference_is_what_the_parsers_say() -> None:
    text = (ROOT / "README.md").read_text()
    committed = text[text.index(BEGIN):text.index(END) + len(END)] + "\n"
    assert committed == reference(), (
        "README.md's console command reference differs from the parsers: run `make docs`")


def test_every_command_of_the_console_is_in_it() -> None:
    app = CorralConsole(mock.MagicMock(), interactive=False, stdout=io.StringIO())
    generated = reference()
    for name in app.get_visible_commands():
        assert f"| `{name}` | `{name}" in generated, name
    assert {name for name, _, _ in console_parsers()} == set(app.get_visible_commands())


def test_a_new_option_shows_up_in_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = PARSERS["wait"]
    before = reference()
    monkeypatch.setattr(parser, "_actions", list(parser._actions))
    parser._actions.append(argparse.Action(["--ghost"], "ghost", metavar="G",
                                           help="a made-up option"))
    after = reference()
    assert "--ghost" not in before
    assert "`wait [--timeout S] [--ghost G] REF [REF ...]`" in after
    assert "`--ghost G`: a made-up option" in after


def test_usage_reads_like_the_console_writes_it() -> None:
    parsers = {name: parser for name, parser, _ in console_parsers()}
    assert usage("run", parsers["run"]) == "run [-w NODESET] [--timeout S] -- COMMAND"
    assert usage("exec", parsers["exec"]).endswith("[-n COUNT] -- PROGRAM [ARGS...]")
