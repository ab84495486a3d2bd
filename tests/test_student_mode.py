"""Student mode: `make check-spawn` against the unwritten stub fails saying so, and the
demo (`make run ARGS="--spawn fork"`) starts its clients with the method asked for."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import ROOT, python_env

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_check_spawn_on_the_stub_fails_and_says_what_to_write() -> None:
    done = subprocess.run(["make", "--no-print-directory", "check-spawn"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "spawn_student in client/spawn.py is not written yet" in done.stdout
    assert "test_spawn_contract" in done.stdout


def test_demo_passes_the_spawn_method_to_its_clients(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "master.demo", "--port", str(free_port()), "--spawn", "fork",
         "list --wait 3 --timeout 60", "run -- ps -o args= -p $PPID", "quit"],
        cwd=tmp_path, env=python_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "with --spawn fork" in done.stdout
    client_lines = [line for line in done.stdout.splitlines() if "-m client" in line]
    assert len(client_lines) == 3 and all("--spawn fork" in line for line in client_lines)
    assert os.path.isdir(tmp_path / "logs" / "demo" / "n1")
