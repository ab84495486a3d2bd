"""Second check of batch mode: every command that fails, cmd2's own included, says so in
one line and makes the master exit non-zero."""

from __future__ import annotations

import pytest

from tests.harness import PATIENCE


@pytest.mark.parametrize("command", ["set notices bogus", "set bogus 1", "help bogus",
                                     "run_script /nonexistent/script", "shell false",
                                     "alias delete nosuch"])
def test_a_failing_builtin_fails_the_batch(spawn_master, command: str) -> None:
    master = spawn_master([command, "quit"])
    out, err = master.proc.communicate(timeout=PATIENCE)
    assert master.proc.returncode != 0, (out, err)
    assert len([line for line in err.splitlines() if line.strip()]) == 1, err
    assert "Traceback" not in out + err


@pytest.mark.parametrize("command", ["set notices failures", "help list", "shell true"])
def test_a_builtin_that_works_leaves_the_batch_ok(spawn_master, command: str) -> None:
    master = spawn_master([command, "quit"])
    out, err = master.proc.communicate(timeout=PATIENCE)
    assert master.proc.returncode == 0, (out, err)
