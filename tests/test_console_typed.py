"""What the operator types after ``run --`` (or as any other word) reaches the nodes'
``/bin/sh -c`` exactly as typed, through the real master process in batch mode."""

from __future__ import annotations

import pytest

from tests.harness import PATIENCE


def batch(spawn_master, spawn_client, *commands: str) -> tuple[str, str, int]:
    master = spawn_master(["list --wait 1 --timeout 30", *commands, "quit"])
    spawn_client("n1", master.address)
    out, err = master.proc.communicate(timeout=PATIENCE * 2)
    return out, err, master.proc.returncode


@pytest.mark.slow
def test_quotes_spacing_and_separators_reach_the_shell(spawn_master, spawn_client) -> None:
    out, err, code = batch(
        spawn_master, spawn_client,
        """run -w n1 -- echo 'a  b' "it's";   echo "$((6*7))"  &&  echo x''y""",
        "printf '[%s]' 'one  two' ; echo",
    )
    assert code == 0, err
    assert "a  b it's\n42\nxy\n" in out
    assert "[one  two]\n" in out


@pytest.mark.slow
def test_pipe_is_the_consoles_and_sh_c_sends_it(spawn_master, spawn_client, tmp_path) -> None:
    local = tmp_path / "local.txt"
    out, err, code = batch(
        spawn_master, spawn_client,
        f"run -w n1 -- echo one two > {local}",
        "run -w n1 -- sh -c 'printf \"a\\nb\\n\" | wc -l'",
    )
    assert code == 0, err
    assert "[n1] exit 0\none two" in local.read_text()  # the console's redirection
    assert "[n1] exit 0\n2\n" in out  # the nodes' pipe, inside sh -c


def test_help_states_the_rule(spawn_master) -> None:
    master = spawn_master(["help run", "help", "quit"])
    out, err = master.proc.communicate(timeout=PATIENCE)
    assert master.proc.returncode == 0, err
    assert "sh -c 'ls | wc -l > count'" in out
    assert out.count("sh -c '") >= 2  # in help run and in the overview


def test_unclosed_quote_is_a_failed_command(spawn_master, spawn_client) -> None:
    out, err, code = batch(spawn_master, spawn_client, "run -w n1 -- echo 'unclosed")
    assert code == 1 and "No closing quotation" in err and "[n1]" not in out
