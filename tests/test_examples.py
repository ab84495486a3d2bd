"""The scripts in examples/ (WISH's case studies for corral) on a local cluster of three
nodes, as a user runs them: plain bash calling `corral`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import PATIENCE, ROOT, python_env
from tests.test_job_socket import start_cluster
from tests.test_variables import control_of, corral

EXAMPLES = ROOT / "examples"
NODES = ("n1", "n2", "n3")


@pytest.fixture
def three(spawn_master, spawn_client, monkeypatch, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Three nodes whose jobs find `corral` on their PATH; n2 has a file `broken` in its
    work folder, which the test programs look for."""
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}"
                               f"{os.environ['PATH']}")
    master, clients = start_cluster(spawn_master, spawn_client, monkeypatch, NODES)
    monkeypatch.setenv("CORRAL_CONTROL", str(control_of(master)))
    (tmp_path / "broken").write_text("")
    assert corral(control_of(master), "copy", "-w", "n2", str(tmp_path / "broken"),
                  "broken").returncode == 0
    return master, clients


def example(*words: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", *words], capture_output=True, text=True,
                          env=python_env(), cwd=cwd, timeout=PATIENCE * 4)


@pytest.mark.slow
def test_stdin_everywhere(three, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A program reading stdin, from one local file, on every node: exit statuses joined,
    the failing node named."""
    program = tmp_path / "summer"
    program.write_text("#!/bin/sh\nsum=0\nwhile read n; do sum=$((sum + n)); done\n"
                       "echo \"sum=$sum\"\ntest ! -e broken\n")
    program.chmod(0o755)
    numbers = tmp_path / "numbers"
    numbers.write_text("".join(f"{n}\n" for n in range(1, 11)))
    done = example(str(EXAMPLES / "stdin-everywhere.sh"), str(program), str(numbers))
    assert done.returncode == 1, done.stderr
    assert done.stderr == "failed on: n2\n"
    rows = [line.split() for line in done.stdout.splitlines()[2:5]]
    assert [(row[1].split(":")[0], row[-1]) for row in rows] == [("n1", "0"), ("n2", "1"),
                                                                 ("n3", "0")]
    for row in rows:
        log = corral(control_of(three[0]), "log", row[1])
        assert log.stdout == "sum=55\n"
    fine = example(str(EXAMPLES / "stdin-everywhere.sh"), str(program), str(numbers),
                   "n[1,3]")
    assert (fine.returncode, fine.stdout.splitlines()[-1]) == (0, "all nodes exited 0")


@pytest.mark.slow
def test_watchdogs(three) -> None:  # type: ignore[no-untyped-def]
    """Watchdogs on every node run what CMD names, record RC_<node>, meet at a barrier and
    reset CMD, command after command (the barriers' generations)."""
    master, _clients = three
    control = control_of(master)
    driver = str(EXAMPLES / "watchdog-command.sh")
    started = example(driver, "--start", *NODES)
    assert started.returncode == 0, started.stderr
    job = started.stdout.split()[-1]
    first = example(driver, "echo hello > greeting", *NODES)
    assert (first.returncode, first.stdout) == (0, "n1: exit 0\nn2: exit 0\nn3: exit 0\n")
    second = example(driver, "test ! -e broken", *NODES)
    assert (second.returncode, second.stderr) == (1, "failed on: n2\n")
    assert second.stdout == "n1: exit 0\nn2: exit 1\nn3: exit 0\n"
    for node in NODES:
        set_by = corral(control, "--json", "var", "get", f"RC_{node}").stdout
        assert f'"set_by": "{node}:' in set_by  # recorded by the node's own watchdog
        assert f' ({job}.' in set_by
    assert corral(control, "var", "get", "CMD").returncode == 1  # reset
    third = example(driver, "exit 3", *NODES)
    assert (third.returncode, third.stderr) == (1, "failed on: n1,n2,n3\n")
    assert example(driver, "quit", *NODES).returncode == 0
    waited = corral(control, "wait", "--timeout", "30", job)  # every watchdog ended, 0
    assert waited.returncode == 0, waited.stdout + waited.stderr
