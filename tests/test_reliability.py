"""Allow-lists, timeouts and isolation from slow or stopped peers."""

from __future__ import annotations

import io
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from master.api import MasterAPI
from master.console import CorralConsole
from master.server import MasterConfig
from tests.conftest import FAST_HEARTBEAT, TOKEN
from tests.harness import wait_until


@pytest.fixture
def quick_master(tmp_path: Path) -> Iterator[MasterAPI]:
    """A master that gives up on a node after 1 s."""
    api = MasterAPI.start(MasterConfig(port=0, heartbeat=FAST_HEARTBEAT, log_dir=tmp_path,
                                       handshake_timeout=1.0, request_timeout=1.0),
                          TOKEN.encode())
    yield api
    api.shutdown()


def test_allow_list_refuses_other_programs(master: MasterAPI, spawn_client,
                                           tmp_path: Path) -> None:
    allow_file = tmp_path / "allowed"
    allow_file.write_text("# lab programs\necho\n")
    spawn_client("lab", master.address, extra=["--allow", "sleep", "--allow-file",
                                                str(allow_file)])
    assert master.wait_ready(1, timeout=30).reached
    assert master.exec("lab", ["sleep", "0"]).ok
    refused = master.exec("lab", ["rm", "-rf", "x"])
    assert refused.errors["lab"].message == "program 'rm' is not allowed on lab"
    assert master.run("lab", "echo allowed").results["lab"].stdout == b"allowed\n"
    denied = master.run("lab", "uname -a")
    assert denied.errors["lab"].message == "program 'uname' is not allowed on lab"
    sneaky = master.run("lab", "echo hi; uname -a")
    assert "only simple commands may run on lab" in sneaky.errors["lab"].message


@pytest.mark.slow
def test_stopped_client_never_blocks_the_others(quick_master: MasterAPI, spawn_client,
                                                capsys) -> None:
    console = CorralConsole(quick_master, interactive=False, stdout=io.StringIO())
    clients = [spawn_client(name, quick_master.address) for name in ("n1", "n2", "n3")]
    assert quick_master.wait_ready(3, timeout=30).reached
    clients[1].signal(signal.SIGSTOP)
    console.onecmd_plus_hooks("pid -w n[1-3]")
    group = console.last_result
    assert group.succeeded == ["n1", "n3"] and group.failed == ["n2"]
    assert group.errors["n2"].message == "no reply within 1 s"
    assert "n2: error: no reply within 1 s" in capsys.readouterr().err
    console.onecmd_plus_hooks("run -w n[1-3] -- echo hi")
    group = console.last_result
    assert group.succeeded == ["n1", "n3"] and group.failed == ["n2"]
    assert group.results["n1"].stdout == b"hi\n"
    clients[1].signal(signal.SIGCONT)


@pytest.mark.slow
def test_slow_and_hostile_connections_cost_nothing_else(master: MasterAPI, spawn_client,
                                                        master_log: Path) -> None:
    spawn_client("healthy", master.address)
    assert master.wait_ready(1, timeout=30).reached
    slow = socket.create_connection(master.address)
    huge = socket.create_connection(master.address)
    huge.sendall(b"\x7f\xff\xff\xff")
    garbage = socket.create_connection(master.address)
    garbage.sendall(b"\x00\x00\x00\x08" + b"\xc1" * 8)
    for byte in b"\x00\x00\x00\x64abc":  # a 100-byte frame, a byte at a time
        slow.sendall(bytes([byte]))
        assert master.run("healthy", "true").ok
    wait_until(lambda: "handshake timeout" in master_log.read_text())
    wait_until(lambda: "exceeds the" in master_log.read_text())
    for sock in (slow, huge, garbage):
        sock.settimeout(30)
        try:
            while sock.recv(65536):
                pass
        except ConnectionResetError:
            pass
    assert [(n.name, str(n.state)) for n in master.nodes()] == [("healthy", "READY")]
