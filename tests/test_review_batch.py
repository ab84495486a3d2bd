"""Second check of batch mode: every command that fails, cmd2's own included, says so in
one line and makes the master exit non-zero."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.harness import PATIENCE, ROOT, MasterProcess, python_env


@pytest.mark.parametrize("command", ["set notices bogus", "set bogus 1", "help bogus",
                                     "run_script /nonexistent/script", "shell false",
                                     "alias delete nosuch"])
@pytest.mark.slow
def test_a_failing_builtin_fails_the_batch(tmp_path: Path, token_file: Path,
                                          command: str) -> None:
    # Run whole, not through the harness: its readline of the first line may buffer the
    # next one too, which communicate() would then never see.
    argv = MasterProcess(tmp_path, token_file).argv([command, "quit"])
    done = subprocess.run(argv, capture_output=True, text=True, env=python_env(), cwd=ROOT,
                          timeout=PATIENCE, stdin=subprocess.DEVNULL)
    assert done.returncode != 0, done
    lines = [line for line in done.stderr.splitlines()
             if line.strip() and "listening on" not in line]
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stdout + done.stderr


@pytest.mark.parametrize("command", ["set notices failures", "help list", "shell true"])
def test_a_builtin_that_works_leaves_the_batch_ok(spawn_master, command: str) -> None:
    master = spawn_master([command, "quit"])
    out, err = master.proc.communicate(timeout=PATIENCE)
    assert master.proc.returncode == 0, (out, err)


@pytest.mark.slow
def test_text_that_reorders_or_hides_itself_is_escaped(spawn_master, spawn_client) -> None:
    # U+202E (right-to-left override) and U+200B (zero-width space), as printf octal bytes.
    master = spawn_master(["list --wait 1 --timeout 30",
                           r"run -w n1 -- printf 'a\342\200\256b\342\200\213c\n'",
                           "exec -w n1 -- no\u202esuch", "quit"])
    spawn_client("n1", master.address)
    out, err = master.proc.communicate(timeout=PATIENCE * 2)
    assert "a\\u202eb\\u200bc" in out, out
    assert "no\\u202esuch" in out + err
    assert "\u202e" not in out + err and "\u200b" not in out + err
