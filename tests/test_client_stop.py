"""A client stopped with SIGTERM says so, leaves its processes running, and finds them
again at its next start."""

from __future__ import annotations

import signal

import psutil

from master.api import MasterAPI
from tests.harness import PATIENCE, wait_until


def test_sigterm_stops_at_once_and_processes_live_on(master: MasterAPI, spawn_client) -> None:
    client = spawn_client("n1", master.address)
    assert master.wait_ready(1, timeout=30).reached
    (info,) = master.exec("n1", ["sleep", "60"]).results["n1"]
    client.signal(signal.SIGTERM)
    assert client.proc is not None
    client.proc.wait(timeout=PATIENCE)
    text = client.log_text()
    assert "stopping on SIGTERM; 1 running processes are left running" in text
    assert "stopped" in text and "another greenlet" not in text, text
    assert psutil.Process(info.pid).status() != psutil.STATUS_ZOMBIE
    client.start()  # the same state folder: the journal brings the process back
    wait_until(lambda: any(p.pid == info.pid and p.state == "running"
                           for p in master.processes("n1").results.get("n1", [])),
               what="the process found again")
    (sent,) = master.signal([f"n1:{info.pid}"], signal.SIGKILL)
    assert sent.ok
