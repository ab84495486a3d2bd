"""Hostile review of the issue 15 speed-ups (read-ahead frames, the heartbeat fast path,
exit events sent soon, output read by loop watchers, journal appends): each test holds one
of the guarantees the issue keeps (no lost exit event, bounded memory, bad input refused)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from common import PROTOCOL_VERSION, auth, frame_auth
from common.framing import FrameChannel
from common.messages import ExecRequest, Hello, Register, Reply, Welcome, decode
from common.procs import ProcExited
from master.api import MasterAPI
from tests.conftest import TOKEN
from tests.harness import PATIENCE, wait_until

PADDING = ["x" * 100_000] * 10  # about 1 MB of argv: every exit event carries it


def _accept_as_master(listener: socket.socket) -> tuple[socket.socket, FrameChannel]:
    """Accept the real client and play the master's half of the handshake."""
    listener.settimeout(PATIENCE)
    conn, _ = listener.accept()
    conn.settimeout(PATIENCE)
    channel = FrameChannel(conn)
    nonce = auth.new_nonce()
    channel.send(Hello(version=PROTOCOL_VERSION, nonce=nonce).to_wire())
    register = decode(channel.read())
    assert isinstance(register, Register)
    token = TOKEN.encode()
    channel.send(Welcome(mac=auth.master_proof(token, nonce, register.nonce,
                                               auth.welcome_claims(1.0)),
                         heartbeat=1.0).to_wire())
    keys = frame_auth.session_keys(token, nonce, register.nonce)
    channel.authenticate(sending_key=keys.master_to_client,
                         receiving_key=keys.client_to_master)
    return conn, channel


@pytest.mark.slow
def test_exit_ending_during_a_resend_does_not_overtake_it(spawn_client, tmp_path: Path
                                                         ) -> None:
    """Exit events the master never acknowledged are resent at the next connection. One
    that ends while that resend is held up by a slow master must still arrive after them:
    the master drops an event whose number is not above the last it saw, so an event that
    overtakes the resend makes it drop (lose) every exit still behind it."""
    listener = socket.create_server(("127.0.0.1", 0))
    # Little room on the master's side, so the client's resend stalls while it is unread.
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client = spawn_client("n1", listener.getsockname())
    conn, channel = _accept_as_master(listener)
    # Early ones end 0.1 s apart (one event each, about 1 MB); the late one on a trigger.
    early = [["sh", "-c", f"sleep {0.1 * (i + 1):.1f}", *PADDING] for i in range(10)]
    late = ["sh", "-c", "while [ ! -e trigger ]; do sleep 0.02; done"]
    pids: dict[int, int] = {}  # req -> pid
    seqs: dict[int, int] = {}  # req -> the client's number for the process
    for req, argv in enumerate([*early, late], start=1):
        channel.send(ExecRequest(req=req, argv=argv).to_wire())
    unacknowledged = 0
    while len(pids) < 11 or unacknowledged < 10:
        message = decode(channel.read())
        if isinstance(message, Reply):
            pids[message.req] = message.value[0]["pid"]
            seqs[message.req] = message.value[0]["seq"]
        elif isinstance(message, ProcExited):
            unacknowledged += len(message.procs)
    conn.close()  # never acknowledged: the client keeps all ten for the next connection

    conn, channel = _accept_as_master(listener)  # the resend now fills the socket
    (client.workdir / "trigger").touch()
    journal = client.state_dir / "processes.jsonl"
    wait_until(lambda: f'{{"seq": {seqs[11]}, "state": "exited"' in journal.read_text(),
               what="the late process recorded as ended")

    recorded: set[int] = set()  # what a master records: events numbered above the last
    last = 0
    arrived: list[int] = []
    deadline = time.monotonic() + PATIENCE
    while len(set(arrived)) < 11 and time.monotonic() < deadline:
        message = decode(channel.read())
        if not isinstance(message, ProcExited):
            continue
        arrived.append(message.eseq)
        if message.eseq > last:
            last = message.eseq
            recorded.update(info.pid for info in message.procs)
    conn.close()
    listener.close()
    assert arrived == sorted(arrived), f"exit events arrived out of order: {arrived}"
    assert recorded == set(pids.values())


def test_run_output_binary_and_after_stdout_closed(master: MasterAPI, spawn_client) -> None:
    """Output read by loop watchers (tests/test_run_output.py has the cap, both streams
    and a background job): every byte value comes back, and a stream still read after the
    other one ended."""
    spawn_client("n1", master.address)
    assert master.wait_ready(1, timeout=PATIENCE).reached
    binary = master.run("n1", "printf '\\000\\377\\001\\n'").results["n1"]
    assert binary.stdout == b"\x00\xff\x01\n"
    closed_early = master.run("n1", "exec 1>&-; sleep 0.2; echo late >&2; exit 3").results["n1"]
    assert (closed_early.exit_code, closed_early.stdout, closed_early.stderr) == (
        3, b"", b"late\n")
