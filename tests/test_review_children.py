"""Second check of what a child inherits from its client: not the fleet's secret."""

from __future__ import annotations

import pytest

from master.api import MasterAPI
from tests.conftest import TOKEN


def test_a_token_in_the_clients_environment_never_reaches_a_child(
        master: MasterAPI, ready_client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_TOKEN", TOKEN)  # how a client may be given its token
    ready_client("n1")
    (info,) = master.exec("n1", ["sh", "-c", 'echo "[$CORRAL_TOKEN]"; env']).results["n1"]
    ref = f"n1:{info.pid}"
    assert master.wait([ref], timeout=30)[0].ok
    out = master.log(ref).data.decode()
    assert out.startswith("[]\n")
    assert TOKEN not in out
    run = master.run("n1", 'echo "[$CORRAL_TOKEN]"').results["n1"]
    assert run.stdout == b"[]\n"


def test_a_run_command_and_an_exec_with_stdin_get_only_three_descriptors(
        master: MasterAPI, ready_client) -> None:
    ready_client("n1")
    listing = "ls /proc/self/fd | sort -n | tr '\\n' ' '"
    run = master.run("n1", listing).results["n1"]
    # ls itself opens one more, for the listing: 0 1 2 and that one, nothing else.
    assert run.stdout.decode().split() == ["0", "1", "2", "3"], run
    (info,) = master.exec("n1", ["sh", "-c", listing], stdin=b"secret").results["n1"]
    ref = f"n1:{info.pid}"
    assert master.wait([ref], timeout=30)[0].ok
    assert master.log(ref).data.decode().split() == ["0", "1", "2", "3"]
