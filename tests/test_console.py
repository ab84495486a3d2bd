"""The console through cmd2's own entry points, over the real engine and real clients."""

from __future__ import annotations

import io

import pytest

from common.states import NodeState
from master.api import MasterAPI
from master.console import CorralConsole


@pytest.fixture
def console(master: MasterAPI) -> CorralConsole:
    return CorralConsole(master, interactive=False, stdout=io.StringIO())


def output(console: CorralConsole) -> str:
    text = console.stdout.getvalue()  # type: ignore[attr-defined]
    console.stdout.truncate(0)  # type: ignore[attr-defined]
    console.stdout.seek(0)  # type: ignore[attr-defined]
    return text


def test_list_wait_then_table(console: CorralConsole, master: MasterAPI, spawn_client) -> None:
    for name in ("n1", "n2", "n3"):
        spawn_client(name, master.address)
    console.onecmd_plus_hooks("list --wait 3 --timeout 30")
    assert console.exit_code == 0
    nodes = console.last_result
    assert [(n.name, n.state) for n in nodes] == [(f"n{i}", NodeState.READY) for i in (1, 2, 3)]
    lines = output(console).splitlines()
    assert lines[0].split()[:4] == ["name", "id", "address", "state"]
    rows = [line.split() for line in lines[2:]]
    assert [(row[0], row[3]) for row in rows] == [("n1", "READY"), ("n2", "READY"),
                                                  ("n3", "READY")]
    assert rows[0][1] == nodes[0].node_id[:8]


def test_list_wait_timeout_fails_but_shows_table(console: CorralConsole, master: MasterAPI,
                                                 spawn_client, capsys) -> None:
    spawn_client("n1", master.address)
    console.onecmd_plus_hooks("list --wait 2 --timeout 0.5")
    assert console.exit_code == 1
    assert "name" in output(console)
    assert "only" in capsys.readouterr().err


def test_bad_arguments_fail(console: CorralConsole) -> None:
    console.onecmd_plus_hooks("list --wait zero")
    assert console.exit_code == 1


def test_other_words_need_ready_nodes(console: CorralConsole, capsys) -> None:
    console.onecmd_plus_hooks("frobnicate now")  # would run on every READY node: none
    assert console.exit_code == 1
    assert "error: no READY nodes" in capsys.readouterr().err


def test_quit_and_exit_stop(console: CorralConsole) -> None:
    assert console.onecmd_plus_hooks("exit") is True
    assert console.onecmd_plus_hooks("quit") is True


def test_help_and_h_list_the_commands(console: CorralConsole) -> None:
    console.onecmd_plus_hooks("h")
    text = output(console)
    for word in ("list", "exit", "quit", "help"):
        assert word in text
