"""A master whose own loop stalled (SIGSTOP, swapped out) does not blame its nodes for the
heartbeats it could not read meanwhile."""

from __future__ import annotations

import signal
import time

import pytest

from tests.harness import PATIENCE, wait_until


@pytest.mark.slow
def test_stopped_master_keeps_its_nodes(spawn_master, spawn_client) -> None:
    # Heartbeat 0.2 s: GONE after 2 s of silence. The master is stopped for 3 s.
    master = spawn_master(extra=["--heartbeat", "0.2"])
    clients = [spawn_client(name, master.address) for name in ("n1", "n2")]
    wait_until(lambda: master.log_text().count("CONNECTING -> READY") == 2, what="READY")
    assert master.proc is not None
    master.proc.send_signal(signal.SIGSTOP)
    try:
        # The stimulus is time itself passing while the master is stopped.
        time.sleep(3.0)
    finally:
        master.proc.send_signal(signal.SIGCONT)
    wait_until(lambda: "loop stalled for" in master.log_text(), what="the stall noticed")
    out, err = master.proc.communicate("list\n", timeout=PATIENCE)
    assert master.proc.returncode == 0, err
    log = master.log_text()
    assert "MISSING" not in log and "GONE (no heartbeat" not in log, log
    rows = [line.split() for line in out.splitlines() if line.startswith(("n1 ", "n2 "))]
    assert [row[3] for row in rows] == ["READY", "READY"]
    for client in clients:
        assert client.log_text().count("registered with master") == 1  # never reconnected

