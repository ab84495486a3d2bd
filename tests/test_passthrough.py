"""A console word that is not a command runs on every node, unless it looks like a typo of
a command or the passthrough is off: checked through the real master process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from master.passthrough import edit_distance, likely_typo
from tests.harness import PATIENCE

COMMANDS = ["list", "pid", "exec", "kill", "sKill", "copy", "pull", "run", "h", "help",
            "exit", "quit", "set", "log", "wait", "getrusage"]


@pytest.mark.parametrize(("typed", "meant"), [
    ("lsit", "list"), ("lst", "list"), ("List", "list"), ("skill", "sKill"),
    ("exti", "exit"), ("hlep", "help"), ("coyp", "copy"), ("getusage", "getrusage"),
    ("ls", None), ("uname", None), ("echo", None), ("df", None), ("frobnicate", None)])
def test_likely_typo(typed: str, meant: str | None) -> None:
    assert likely_typo(typed, COMMANDS) == meant


def test_a_swap_is_one_edit() -> None:
    assert edit_distance("lsit", "list") == 1
    assert edit_distance("ls", "list") == 2
    assert edit_distance("", "abc") == 3


@pytest.fixture
def recorder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Programs ``lsit`` and ``frobnicate`` on the clients' PATH that record their
    arguments in a file: whatever reached a node leaves a line there."""
    folder = tmp_path / "bin"
    folder.mkdir()
    record = tmp_path / "ran"
    for name in ("lsit", "frobnicate"):
        program = folder / name
        program.write_text(f'#!/bin/sh\necho "{name} $*" >> {record}\n')
        program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return record


def _batch(spawn_master, spawn_client, commands: list[str], extra: list[str] | None = None
           ) -> tuple[int, str]:
    master = spawn_master(["list --wait 1 --timeout 30", *commands, "quit"], extra=extra)
    spawn_client("n1", master.address)
    _out, err = master.proc.communicate(timeout=PATIENCE * 2)
    return master.proc.returncode, err


def _ran(record: Path) -> list[str]:
    return record.read_text().splitlines() if record.exists() else []


@pytest.mark.slow
def test_a_typo_runs_nowhere_and_fails_the_batch(spawn_master, spawn_client,
                                                 recorder: Path) -> None:
    code, err = _batch(spawn_master, spawn_client,
                       ["frobnicate passed through", "lsit", "run -- lsit on purpose"])
    assert code == 1
    assert "unknown command 'lsit' (did you mean list?)" in err
    assert _ran(recorder) == ["frobnicate passed through", "lsit on purpose"]


@pytest.mark.slow
def test_set_passthrough_off_leaves_run(spawn_master, spawn_client, recorder: Path) -> None:
    code, err = _batch(spawn_master, spawn_client,
                       ["set passthrough off", "frobnicate typed", "run -- frobnicate run",
                        "set passthrough on", "frobnicate typed again"])
    assert code == 1
    assert "unknown command 'frobnicate' (passthrough is off)" in err
    assert _ran(recorder) == ["frobnicate run", "frobnicate typed again"]


@pytest.mark.slow
def test_no_passthrough_on_the_command_line(spawn_master, spawn_client,
                                            recorder: Path) -> None:
    code, err = _batch(spawn_master, spawn_client,
                       ["frobnicate typed", "run -- frobnicate run"], ["--no-passthrough"])
    assert code == 1
    assert "unknown command 'frobnicate' (passthrough is off)" in err
    assert _ran(recorder) == ["frobnicate run"]
