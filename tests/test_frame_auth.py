"""Every frame after the handshake is authenticated: a man in the middle who relayed a real
handshake can neither add, replay, reorder, cut nor splice frames in either direction."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import socket
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import msgpack
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from client.protocol import Identity, handshake
from common.errors import ConnectionClosed, ErrorCode
from common.frame_auth import TAG_BYTES, FrameAuthError, FrameMac, session_keys
from common.framing import (
    HEADER,
    FrameChannel,
    FrameReader,
    FrameWriter,
    pack_frame,
    send_parts,
)
from common.messages import ErrorFrame, ExecRequest, Heartbeat, decode
from common.states import NodeState
from master.api import MasterAPI
from tests.conftest import TOKEN
from tests.harness import ClientProcess, wait_until
from tests.relay import FrameRelay

# --- the layer on its own ------------------------------------------------------------------


def _pair() -> tuple[FrameWriter, FrameReader, socket.socket]:
    left, right = socket.socketpair()
    keys = session_keys(b"token", b"m" * 32, b"c" * 32)
    writer, reader = FrameWriter(), FrameReader(right)
    writer.authenticate(FrameMac(keys.client_to_master))
    reader.authenticate(FrameMac(keys.client_to_master))
    return writer, reader, left


def test_frames_pass_in_order_and_a_replay_fails() -> None:
    writer, reader, sender = _pair()
    first, second = writer.frame({"n": 1}), writer.frame({"n": 2})
    sender.sendall(first + second + first)
    assert reader.read_frame() == {"n": 1}
    assert reader.read_frame() == {"n": 2}
    with pytest.raises(FrameAuthError, match="frame 2 failed authentication"):
        reader.read_frame()


def test_a_chunk_sent_from_its_own_buffer_is_the_same_frame() -> None:
    """A big byte string travels from where it lies (no copies into the frame), yet the
    frame and its tag are those of the whole frame: the reader cannot tell the difference,
    whether the socket takes the parts at once, a few bytes at a time or one by one."""
    chunk = bytes(range(256)) * 4096  # 1 MiB, as a log chunk
    payload = {"t": "reply", "req": 9, "value": {"data": chunk, "offset": 5, "ended": False}}
    keys = session_keys(b"token", b"m" * 32, b"c" * 32)
    whole, gathered = FrameWriter(), FrameWriter()
    whole.authenticate(FrameMac(keys.client_to_master))
    gathered.authenticate(FrameMac(keys.client_to_master))
    for stream in (_Trickle(sendmsg=True), _Trickle(sendmsg=False)):
        parts = gathered.frame_parts(payload)
        assert len(parts) > 2 and any(part is chunk for part in parts)
        send_parts(stream, parts)
        assert bytes(stream.wire) == whole.frame(payload)
    small = {"t": "ping", "req": 1}
    assert gathered.frame_parts(small) == [whole.frame(small)]


class _Trickle:
    """A socket that takes at most 100,000 bytes per call; without ``sendmsg`` it says
    so as a TLS socket does."""

    def __init__(self, sendmsg: bool) -> None:
        self.wire = bytearray()
        self._sendmsg = sendmsg

    def send(self, data: memoryview) -> int:
        taken = bytes(data[:100_000])
        self.wire += taken
        return len(taken)

    def sendmsg(self, buffers: list[memoryview]) -> int:
        if not self._sendmsg:
            raise NotImplementedError("sendmsg not allowed on instances of SSLSocket")
        room = 100_000
        for buffer in buffers:
            taken = bytes(buffer[:room])
            self.wire += taken
            room -= len(taken)
        return 100_000 - room

    def recv_into(self, buffer: memoryview, nbytes: int = 0) -> int:
        raise AssertionError("not read")

    def sendall(self, data: bytes) -> None:
        raise AssertionError("not used")


def test_keys_differ_per_direction_and_per_connection() -> None:
    keys = session_keys(b"token", b"m" * 32, b"c" * 32)
    other = session_keys(b"token", b"m" * 32, b"d" * 32)
    assert keys.master_to_client != keys.client_to_master
    assert keys.master_to_client != other.master_to_client


# --- a hostile client that holds the token: each bad frame closes only its connection -------

def _beat(seq: int) -> bytes:
    return msgpack.packb(Heartbeat(seq=seq, load=[0.0, 0.0, 0.0], cpu_percent=0.0,
                                   mem_available=1, mem_total=1, disk_free=1,
                                   processes=0).to_wire(), use_bin_type=True)


def _cut_one_byte(frame: bytes) -> bytes:
    body, tag = frame[HEADER.size:-TAG_BYTES], frame[-TAG_BYTES:]
    return HEADER.pack(len(body) - 1 + TAG_BYTES) + body[:-1] + tag


def _splice(first: bytes, second: bytes) -> bytes:
    """The first frame's bytes with the second frame's tag."""
    return first[:-TAG_BYTES] + second[-TAG_BYTES:]


# Each makes what a hostile peer sends after the handshake from a writer that seals for
# this connection and one that seals for another connection of the same token.
BadFrames = Callable[[FrameWriter, FrameWriter], bytes]
CASES: dict[str, BadFrames] = {
    "replayed": lambda w, _: (frame := w.seal(_beat(1))) + frame,
    "reordered": lambda w, _: (lambda a, b: b + a)(w.seal(_beat(1)), w.seal(_beat(2))),
    "one dropped": lambda w, _: (w.seal(_beat(1)), w.seal(_beat(2)))[1],
    "truncated": lambda w, _: _cut_one_byte(w.seal(_beat(1))),
    "spliced": lambda w, _: _splice(w.seal(_beat(1)), w.seal(_beat(2))),
    "from another connection": lambda _, other: other.seal(_beat(1)),
    "without a MAC": lambda _w, _o: pack_frame({"t": "ping", "req": 1}),
    "one bit flipped": lambda w, _: (lambda f: f[:8] + bytes([f[8] ^ 1]) + f[9:])(
        w.seal(_beat(1))),
}


@pytest.fixture
def healthy(master: MasterAPI, spawn_client) -> ClientProcess:
    client = spawn_client("healthy", master.address)
    assert master.wait_ready(1, timeout=30).reached
    return client


def _authenticated(master: MasterAPI, name: str) -> FrameChannel:
    channel = FrameChannel(socket.create_connection(master.address, timeout=30))
    handshake(channel, Identity(node_id=os.urandom(16).hex(), name=name, host="test"),
              TOKEN.encode())
    return channel


@pytest.mark.parametrize("case", CASES)
def test_master_refuses_a_bad_frame(case: str, master: MasterAPI, healthy: ClientProcess,
                                    master_log: Path) -> None:
    channel = _authenticated(master, "rogue")
    other = _authenticated(master, "bystander")
    channel.stream.sendall(CASES[case](channel.writer, other.writer))
    try:
        while not isinstance(error := decode(channel.read()), ErrorFrame):
            pass  # the master's pings, then why it closes
        assert error.code == ErrorCode.PROTOCOL
        with pytest.raises(ConnectionClosed):
            channel.read()
    except ConnectionResetError:
        pass  # what we sent after the bad frame was unread when the master closed: a reset
    why = wait_until(lambda: re.search(r"closed rogue \(127.0.0.1:\d+\): (.*)",
                                       master_log.read_text()), what="log line").group(1)
    assert "failed authentication" in why or "too short to carry its MAC" in why
    states = {n.name: n.state for n in master.nodes()}
    assert states["rogue"] is NodeState.GONE and states["healthy"] is NodeState.READY
    assert master.run("healthy", "true").results["healthy"].exit_code == 0


# --- a man in the middle between a real master and a real client ---------------------------

@pytest.fixture
def relay(master: MasterAPI) -> Iterator[FrameRelay]:
    relay = FrameRelay(master.address)
    yield relay
    relay.close()


@pytest.fixture
def relayed(master: MasterAPI, relay: FrameRelay, spawn_client) -> ClientProcess:
    client = spawn_client("n1", relay.address)
    assert master.wait_ready(1, timeout=30).reached
    return client


def _refused_then_back(master: MasterAPI, relay: FrameRelay, client: ClientProcess,
                       master_log: Path) -> None:
    """Both sides say why the connection ended; the client comes back through the relay."""
    wait_until(lambda: "closing connection to master: frame" in client.log_text()
               and "failed authentication" in client.log_text(), what="client's log")
    wait_until(lambda: "closed n1 (127.0.0.1:" in master_log.read_text()
               and "failed authentication" in master_log.read_text(), what="master's log")
    wait_until(lambda: len(relay.links) == 2, what="the client reconnecting")
    assert master.wait_ready(1, timeout=30).reached


def test_an_exec_injected_after_a_relayed_handshake_runs_nothing(
        master: MasterAPI, relay: FrameRelay, relayed: ClientProcess, master_log: Path,
        tmp_path: Path) -> None:
    injected = tmp_path / "injected"
    # The relay saw the whole handshake but holds no token: the best it can do is an exec
    # frame of the right shape, with a tag under a key of its own.
    forger = FrameWriter()
    forger.authenticate(FrameMac(os.urandom(32)))
    relay.links[0].to_client.inject(
        forger.frame(ExecRequest(req=10**6, argv=["touch", str(injected)]).to_wire()))
    _refused_then_back(master, relay, relayed, master_log)
    genuine = tmp_path / "genuine"
    assert master.run("n1", f"touch {genuine}").results["n1"].exit_code == 0
    assert genuine.exists() and not injected.exists()


def test_a_replayed_request_runs_once(master: MasterAPI, relay: FrameRelay,
                                      relayed: ClientProcess, master_log: Path,
                                      tmp_path: Path) -> None:
    count = tmp_path / "count"
    assert master.run("n1", f"echo ran >> {count}").results["n1"].exit_code == 0
    to_client = relay.links[0].to_client
    request = next(f for f in to_client.frames if b"echo ran" in f)
    to_client.inject(request)
    _refused_then_back(master, relay, relayed, master_log)
    assert count.read_text() == "ran\n"


def _changing(tag: str, field: str, value: object) -> Callable[[bytes], bytes]:
    """A rewrite that sets ``field`` in the handshake frame of type ``tag``."""
    def rewrite(frame: bytes) -> bytes:
        try:
            body = msgpack.unpackb(frame[HEADER.size:])
        except ValueError:
            return frame  # an authenticated frame: its tag is not msgpack
        if body.get("t") != tag:
            return frame
        changed = msgpack.packb({**body, field: value}, use_bin_type=True)
        return HEADER.pack(len(changed)) + changed
    return rewrite


def test_a_relay_cannot_rename_the_client(master: MasterAPI, spawn_client,
                                          master_log: Path) -> None:
    relay = FrameRelay(master.address, to_master=_changing("register", "name", "intruder"))
    try:
        spawn_client("n1", relay.address)
        wait_until(lambda: "authentication failed for 'intruder'" in master_log.read_text(),
                   what="master's log")
        assert master.nodes() == []
    finally:
        relay.close()


def test_a_relay_cannot_change_the_heartbeat_interval(master: MasterAPI, spawn_client,
                                                      master_log: Path) -> None:
    relay = FrameRelay(master.address, to_client=_changing("welcome", "heartbeat", 3600.0))
    try:
        client = spawn_client("n1", relay.address)
        wait_until(lambda: "master failed authentication" in client.log_text(),
                   what="client's log")
        assert all(n.state is not NodeState.READY for n in master.nodes())
    finally:
        relay.close()


def test_a_frame_reflected_back_to_the_master_is_refused(
        master: MasterAPI, relay: FrameRelay, relayed: ClientProcess, master_log: Path
) -> None:
    link = relay.links[0]
    wait_until(lambda: len(link.to_client.frames) >= 3, what="a frame after the welcome")
    link.to_master.inject(link.to_client.frames[-1])  # the master's own frame, sent back
    wait_until(lambda: "closed n1 (127.0.0.1:" in master_log.read_text()
               and "failed authentication" in master_log.read_text(), what="master's log")
    wait_until(lambda: len(relay.links) == 2, what="the client reconnecting")
    assert master.wait_ready(1, timeout=30).reached


def test_layout_is_as_the_specification_says() -> None:
    """docs/protocol.md's formulas, written out again here, give the very bytes we send."""
    token, master_nonce, client_nonce = b"the token", b"M" * 32, b"C" * 32
    prk = hmac.new(master_nonce + client_nonce, token, hashlib.sha256).digest()
    client_key = hmac.new(prk, b"corral-v3 frames client to master\x01",
                          hashlib.sha256).digest()
    writer = FrameWriter()
    writer.authenticate(FrameMac(session_keys(token, master_nonce, client_nonce)
                                 .client_to_master))
    writer.frame({"t": "ping", "req": 1})  # number 0
    frame = writer.frame({"t": "ping", "req": 2})  # number 1
    body = msgpack.packb({"t": "ping", "req": 2}, use_bin_type=True)
    length = struct.pack(">I", len(body) + 16)
    tag = AESGCM(client_key).encrypt((1).to_bytes(12, "big"), b"", body)
    assert frame == length + body + tag
