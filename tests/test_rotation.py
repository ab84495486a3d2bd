"""Running for months: the token rotated with SIGHUP across master and clients without
stopping either, logs that rotate by size or are reopened for logrotate, and a whole
process log fetched to a local file."""

from __future__ import annotations

import hashlib
import io
import signal
from pathlib import Path

import pytest

from master.api import MasterAPI
from master.console import CorralConsole
from master.operations import LOG_CHUNK
from tests.harness import PATIENCE, wait_until

NEW_TOKEN = "rotated-token-9876543210\n"


@pytest.mark.slow
def test_token_rotation_without_stopping_anything(spawn_master, spawn_client, tmp_path: Path,
                                                  token_file: Path) -> None:
    master = spawn_master(extra=["--heartbeat", "0.5"])
    client_token = tmp_path / "client-token"
    client_token.write_text(token_file.read_text())
    client_token.chmod(0o600)
    client = spawn_client("n1", master.address, token=client_token)
    wait_until(lambda: "registered with master" in client.log_text(), what="registered")
    # The documented procedure: new token into every file, then SIGHUP everyone.
    token_file.write_text(NEW_TOKEN)
    client_token.write_text(NEW_TOKEN)
    assert master.proc is not None
    master.proc.send_signal(signal.SIGHUP)
    client.signal(signal.SIGHUP)
    wait_until(lambda: "SIGHUP: token re-read" in master.log_text()
               and "changed: new connections must prove the new token" in master.log_text(),
               what="master re-read")
    wait_until(lambda: "SIGHUP: token re-read (changed" in client.log_text(),
               what="client re-read")
    assert master.proc.poll() is None and client.proc.poll() is None
    assert "closed" not in client.log_text()  # the connection made stayed up
    fresh = tmp_path / "fresh-token"
    fresh.write_text(NEW_TOKEN)
    fresh.chmod(0o600)
    newcomer = spawn_client("n2", master.address, token=fresh)
    wait_until(lambda: "registered with master" in newcomer.log_text(), what="new token in")
    stale = tmp_path / "stale-token"
    stale.write_text("test-token-0123456789\n")  # the old one
    stale.chmod(0o600)
    old = spawn_client("old", master.address, token=stale)
    wait_until(lambda: "wrong token" in old.log_text(), what="the old token refused")
    # n1 proves the new token the next time it connects: to a restarted master.
    master.proc.kill()
    master.proc.wait()
    spawn_master(port=master.port, extra=["--heartbeat", "0.5"])
    wait_until(lambda: client.log_text().count("registered with master") == 2,
               what="n1 registered with the new token")


def test_master_log_is_reopened_on_sighup(spawn_master) -> None:
    master = spawn_master()
    log = master.base / "master-logs" / "master.log"
    wait_until(lambda: "listening on" in log.read_text(), what="first log line")
    log.rename(log.with_name("master.log.1"))  # what logrotate does
    assert master.proc is not None
    master.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: log.exists() and "SIGHUP: token re-read" in log.read_text(),
               what="a new master.log")
    assert "SIGHUP" not in log.with_name("master.log.1").read_text()


def test_client_log_rotates_by_size(master: MasterAPI, spawn_client, tmp_path: Path) -> None:
    log_file = tmp_path / "client-logs" / "n1.log"
    spawn_client("n1", master.address, extra=["-v", "--log-file", str(log_file),
                                              "--log-max-bytes", "2000", "--log-keep", "2"])
    assert master.wait_ready(1, timeout=PATIENCE).reached
    for _ in range(6):
        master.exec("n1", ["true"], count=10)
    wait_until(lambda: log_file.with_name("n1.log.2").exists(), what="two rotations")
    assert not log_file.with_name("n1.log.3").exists()
    assert log_file.stat().st_size <= 2000


def test_log_save_fetches_a_whole_log(master: MasterAPI, spawn_client, tmp_path: Path) -> None:
    spawn_client("n1", master.address)
    assert master.wait_ready(1, timeout=PATIENCE).reached
    (proc,) = master.exec("n1", ["sh", "-c", "seq 1 600000"]).results["n1"]
    ref = f"n1:{proc.pid}"
    assert master.wait([ref], timeout=PATIENCE)[0].ok
    console = CorralConsole(master, interactive=False, stdout=io.StringIO())
    target = tmp_path / "saved.log"
    console.onecmd_plus_hooks(f"log {ref} --save {target}")
    expected = "".join(f"{n}\n" for n in range(1, 600001)).encode()
    assert len(expected) > 3 * LOG_CHUNK  # several chunks
    assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(expected).digest()
    assert console.exit_code == 0
    assert f"saved {len(expected):,} bytes of {ref}'s log to {target}" in \
        console.stdout.getvalue()  # type: ignore[attr-defined]
    console.onecmd_plus_hooks(f"log n1:1 --save {tmp_path / 'none.log'}")
    assert console.exit_code == 1
    assert not (tmp_path / "none.log").exists()
    assert not list(tmp_path.glob(".*.part"))
