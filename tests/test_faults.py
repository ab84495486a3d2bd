"""Nothing lost: the master or a client killed with SIGKILL and started again."""

from __future__ import annotations

import re
import signal
import threading
from pathlib import Path
from typing import Any

import msgpack
import psutil
import pytest

from common.frame_auth import TAG_BYTES
from common.messages import TYPE_KEY
from master.api import MasterAPI
from master.events import Event, ProcessEvent
from tests.conftest import engine
from tests.harness import PATIENCE, wait_until
from tests.relay import FrameRelay

GATE = "while [ ! -e go ]; do sleep 0.05; done; exit 3"


def log_pids(client, program: str) -> list[int]:  # type: ignore[no-untyped-def]
    return [int(m.group(1)) for p in client.log_dir.glob(f"*-{program}-*.log")
            if (m := re.search(r"-(\d+)\.log$", p.name))]


@pytest.mark.slow
def test_master_killed_while_50_processes_run(spawn_master, spawn_client) -> None:
    first = spawn_master(["list --wait 3 --timeout 30", "exec -n 10 -- sleep 60",
                          f"exec -n 7 -- sh -c '{GATE}'"])
    clients = [spawn_client(name, first.address) for name in ("n1", "n2", "n3")]
    for client in clients:
        wait_until(lambda c=client: len(log_pids(c, "sleep")) == 10
                   and len(log_pids(c, "sh")) == 7, what=f"{client.name}'s 17 processes")
    port = first.port
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait()
    for client in clients:  # 21 of the 51 end while no master is there
        (client.workdir / "go").touch()
    for client in clients:
        for pid in log_pids(client, "sh"):
            wait_until(lambda p=pid: not psutil.pid_exists(p), what=f"pid {pid} reaped")
    again = spawn_master(["list --wait 3 --timeout 30", "pid", "quit"], port=port)
    out, err = again.proc.communicate(timeout=PATIENCE * 2)
    assert again.proc.returncode == 0, err
    states: dict[str, str] = {}
    for line in out.splitlines():
        match = re.match(r"(n\d:\d+)\s+(sleep 60|sh -c .*?)\s{2,}(running|exited 3)\s", line)
        if match:
            states[match.group(1)] = match.group(3)
    expected = {}
    for client in clients:
        expected.update({f"{client.name}:{p}": "running" for p in log_pids(client, "sleep")})
        expected.update({f"{client.name}:{p}": "exited 3" for p in log_pids(client, "sh")})
    assert len(expected) == 51
    assert states == expected


def _body(frame: bytes) -> dict[str, Any]:
    """The message in an authenticated frame (empty for a handshake frame)."""
    try:
        value = msgpack.unpackb(frame[4:-TAG_BYTES], raw=False)
    except Exception:  # a handshake frame has no MAC: cut there it does not decode
        return {}
    return value if isinstance(value, dict) else {}


def _exits_in(frames: list[bytes]) -> int:
    return sum(len(m["procs"]) for m in map(_body, frames) if m.get(TYPE_KEY) == "exited")


class AckHold:
    """A relay rewrite that stops the first ack of an exit event on its way to the client:
    for the client, the master was killed before it acknowledged. ``release`` then closes
    that connection, and acks go through from then on."""

    def __init__(self) -> None:
        self.held = threading.Event()
        self._release = threading.Event()
        self.eseq = 0

    def __call__(self, frame: bytes) -> bytes:
        message = _body(frame)
        if message.get(TYPE_KEY) == "ack" and message.get("boot") and not self._release.is_set():
            self.eseq = int(message["eseq"])
            self.held.set()
            self._release.wait(PATIENCE * 4)
            raise ConnectionResetError("the ack never reached the client")
        return frame

    def release(self) -> None:
        self._release.set()


def test_master_killed_before_it_acknowledged_exits(spawn_master, spawn_client,
                                                    tmp_path: Path) -> None:
    """The master acknowledges exit events a little after they arrive. Killed inside that
    window and started again, it hears every unacknowledged event once: none lost, none
    shown twice."""
    hold = AckHold()
    first = spawn_master(["list --wait 1 --timeout 30", f"exec -n 3 -- sh -c '{GATE}'",
                          "exec -n 20 -- true"])
    relay = FrameRelay(first.address, to_client=hold)
    try:
        client = spawn_client("n1", relay.address)
        assert hold.held.wait(PATIENCE), "no exit event was acknowledged"
        wait_until(lambda: len(log_pids(client, "true")) == 20, what="20 started")
        wait_until(lambda: _exits_in(relay.links[0].to_master.frames) == 20,
                   what="the 20 exits sent to the first master")
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait()
        (client.workdir / "go").touch()  # 3 more end while no master is there
        for pid in log_pids(client, "sh"):
            wait_until(lambda p=pid: not _alive(p), what=f"pid {pid} ended")
        heard: list[ProcessEvent] = []

        def hear(event: Event) -> None:
            if isinstance(event, ProcessEvent) and event.info.ended_state:
                heard.append(event)

        with engine(tmp_path, tmp_path / "again.log",
                    state_dir=tmp_path / "master-state") as again:
            again.subscribe(hear)
            relay.master = again.address
            hold.release()  # the client finds the connection closed and comes back
            assert again.wait_ready(1, timeout=PATIENCE).reached
            (last,) = again.exec("n1", ["true"]).results["n1"]
            # Events travel in order: once the last one is heard, any repeat has been too.
            wait_until(lambda: any(e.info.pid == last.pid for e in heard), what="last exit")
            table = again.processes("n1").results["n1"]
    finally:
        relay.close()
    assert hold.eseq >= 1
    ended = [f"n1:{p}" for p in log_pids(client, "true") + log_pids(client, "sh")]
    assert len(ended) == 24 and f"n1:{last.pid}" in ended
    assert sorted(e.ref for e in heard) == sorted(ended)  # each once
    assert sorted(p.describe() for p in table) == ["exited 0"] * 21 + ["exited 3"] * 3
    assert len({p.pid for p in table}) == 24


def test_client_killed_and_restarted_finds_its_processes(master: MasterAPI,
                                                         spawn_client) -> None:
    client = spawn_client("n1", master.address)
    assert master.wait_ready(1, timeout=30).reached
    (finished,) = master.exec("n1", ["sh", "-c", "echo done; exit 0"]).results["n1"]
    (sleeper,) = master.exec("n1", ["sh", "-c", "echo sleeping; exec sleep 60"]).results["n1"]
    (gated,) = master.exec("n1", ["sh", "-c", GATE]).results["n1"]
    assert master.wait([f"n1:{finished.pid}"], timeout=30)[0].ok
    client.signal(signal.SIGKILL)
    client.proc.wait()
    (client.workdir / "go").touch()
    wait_until(lambda: not _alive(gated.pid), what="the gated process ended")
    client.start()

    def states() -> dict[int, str]:
        group = master.processes("n1")
        return {p.pid: p.describe() for p in group.results.get("n1", [])}

    wait_until(lambda: states() == {finished.pid: "exited 0", sleeper.pid: "running",
                                    gated.pid: "ended, status unknown"}, what="the table")
    assert master.log(f"n1:{sleeper.pid}").data == b"sleeping\n"  # logs are kept
    outcome = master.signal([f"n1:{sleeper.pid}"], signal.SIGTERM)[0]
    assert outcome.ok, outcome
    wait_until(lambda: states()[sleeper.pid] == "ended, status unknown", what="it ended")
    assert not _alive(sleeper.pid)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_corrupt_state_file_gives_a_warning_and_a_fresh_start(master: MasterAPI,
                                                              spawn_client) -> None:
    client = spawn_client("n1", master.address)
    assert master.wait_ready(1, timeout=30).reached
    master.exec("n1", ["true"])
    client.stop()
    journal = client.state_dir / "processes.jsonl"
    journal.write_bytes(b'{"seq": 1, "argv": ["true"]}\n\x00\xff garbage\n')
    client.start()
    wait_until(lambda: "the client starts with an empty process table" in client.log_text(),
               what="the warning")
    assert (client.state_dir / "processes.jsonl.corrupt").exists()
    wait_until(lambda: master.processes("n1").results.get("n1") == [], what="empty table")


def test_truncated_last_line_is_dropped_with_a_warning(master: MasterAPI,
                                                       spawn_client) -> None:
    client = spawn_client("n1", master.address)
    assert master.wait_ready(1, timeout=30).reached
    (info,) = master.exec("n1", ["sh", "-c", "exit 4"]).results["n1"]
    assert master.wait([f"n1:{info.pid}"], timeout=30)[0].info.describe() == "exited 4"
    client.stop()
    journal = client.state_dir / "processes.jsonl"
    journal.write_text(journal.read_text() + '{"seq": 2, "argv": ["tru')
    client.start()
    wait_until(lambda: "ends in a truncated line" in client.log_text(), what="the warning")
    wait_until(lambda: [p.describe() for p in master.processes("n1").results.get("n1", [])]
               == ["exited 4"], what="the table kept")


@pytest.mark.slow
def test_journal_stays_compact(master: MasterAPI, spawn_client) -> None:
    client = spawn_client("n1", master.address)
    assert master.wait_ready(1, timeout=30).reached
    refs = [f"n1:{p.pid}" for p in master.exec("n1", ["true"], count=1500).results["n1"]]
    assert all(r.ok for r in master.wait(refs, timeout=120))
    journal = client.state_dir / "processes.jsonl"
    assert journal.read_text().count("\n") == 3000  # a start and an end line each
    client.stop()
    client.start()
    wait_until(lambda: len(master.processes("n1").results.get("n1", [])) == 1500,
               what="the table restored")
    assert journal.read_text().count("\n") == 1500  # rewritten compactly at start
