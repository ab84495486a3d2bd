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
