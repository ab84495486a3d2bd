"""Every kind of bad peer costs only its own connection, with a log line that says why."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.protocol import Identity, handshake
from common import PROTOCOL_VERSION, auth
from common.errors import ConnectionClosed, ErrorCode, RemoteError
from common.framing import FrameChannel, pack_frame
from common.messages import ErrorFrame, Hello, Register, Welcome, decode
from common.states import NodeState
from master.api import MasterAPI
from tests.conftest import TOKEN
from tests.harness import wait_until


@pytest.fixture
def healthy(master: MasterAPI, spawn_client) -> object:
    client = spawn_client("healthy", master.address)
    assert master.wait_ready(1, timeout=30).reached
    return client


def connect(master: MasterAPI) -> tuple[socket.socket, FrameChannel]:
    sock = socket.create_connection(master.address, timeout=30)
    return sock, FrameChannel(sock)


def read_error(channel: FrameChannel) -> ErrorFrame:
    """Read frames until the master's error frame; the connection must close after it."""
    while True:
        message = decode(channel.read())
        if isinstance(message, ErrorFrame):
            with pytest.raises(ConnectionClosed):
                channel.read()
            return message


def assert_unharmed(master: MasterAPI) -> None:
    nodes = master.nodes()
    assert [(n.name, n.state) for n in nodes] == [("healthy", NodeState.READY)]
    before = nodes[0].since_heartbeat
    assert before is not None and before < 3 * 0.2 + 0.5


def logged(master_log: Path, text: str) -> bool:
    return text in master_log.read_text()


def identity(name: str = "bad") -> Identity:
    return Identity(node_id="f" * 32, name=name, host="test")


def test_good_handshake(master: MasterAPI) -> None:
    sock, channel = connect(master)
    welcome = handshake(channel, identity("raw"), TOKEN.encode())
    assert isinstance(welcome, Welcome) and welcome.heartbeat == 0.2
    wait_until(lambda: [n.name for n in master.nodes()] == ["raw"], what="raw registered")
    sock.close()


def test_wrong_token_is_refused(master: MasterAPI, healthy, master_log: Path) -> None:
    _sock, channel = connect(master)
    with pytest.raises(RemoteError, match="authentication failed") as caught:
        handshake(channel, identity(), b"not-the-token")
    assert caught.value.code is ErrorCode.AUTH_FAILED
    wait_until(lambda: logged(master_log, "authentication failed for 'bad': wrong token"))
    assert_unharmed(master)


def test_client_with_wrong_token_logs_refusal(master: MasterAPI, healthy, spawn_client,
                                              tmp_path: Path) -> None:
    wrong = tmp_path / "wrong-token"
    wrong.write_text("something else\n")
    intruder = spawn_client("intruder", master.address, token=wrong)
    wait_until(lambda: "master refused: authentication failed" in intruder.log_text())
    assert_unharmed(master)


def test_client_refuses_a_master_without_the_token(spawn_client, tmp_path: Path) -> None:
    """A fake master that accepts anything but cannot prove it holds the token."""
    listener = socket.create_server(("127.0.0.1", 0))
    got: dict[str, object] = {}

    def fake_master() -> None:
        conn, _ = listener.accept()
        reader = FrameChannel(conn)
        conn.sendall(pack_frame(Hello(version=PROTOCOL_VERSION, nonce=b"n" * 32).to_wire()))
        got["register"] = decode(reader.read())
        conn.sendall(pack_frame(Welcome(mac=b"\0" * 32, heartbeat=1.0).to_wire()))
        got["answer"] = decode(reader.read())
        conn.close()

    thread = threading.Thread(target=fake_master, daemon=True)
    thread.start()
    client = spawn_client("n1", listener.getsockname())
    thread.join(timeout=30)
    listener.close()
    assert isinstance(got["register"], Register)
    answer = got["answer"]
    assert isinstance(answer, ErrorFrame) and answer.code == ErrorCode.AUTH_FAILED
    wait_until(lambda: "master failed authentication" in client.log_text())


def test_wrong_protocol_version(master: MasterAPI, healthy, master_log: Path) -> None:
    sock, channel = connect(master)
    hello = decode(channel.read())
    assert isinstance(hello, Hello)
    nonce = auth.new_nonce()
    sock.sendall(pack_frame(Register(
        version=PROTOCOL_VERSION + 98, node_id="e" * 32, name="future", host="h", nonce=nonce,
        mac=auth.client_proof(TOKEN.encode(), hello.nonce, nonce, auth.register_claims(
            PROTOCOL_VERSION + 98, "e" * 32, "future", "h", 0))).to_wire()))
    error = read_error(channel)
    assert error.code == ErrorCode.VERSION_MISMATCH
    wait_until(lambda: logged(master_log, f"protocol version {PROTOCOL_VERSION + 98} not "
                                          "supported"))
    assert_unharmed(master)


def test_oversize_frame(master: MasterAPI, healthy, master_log: Path) -> None:
    sock, channel = connect(master)
    sock.sendall(struct.pack(">I", 2**32 - 1))
    error = read_error(channel)
    assert error.code == ErrorCode.FRAME_TOO_LARGE
    wait_until(lambda: logged(master_log, "exceeds the 65536-byte limit before authentication"))
    assert_unharmed(master)


def test_garbage_bytes(master: MasterAPI, healthy, master_log: Path) -> None:
    sock, channel = connect(master)
    sock.sendall(b"\x00\x00\x00\x10GET / HTTP/1.1\r\n")
    error = read_error(channel)
    assert error.code == ErrorCode.PROTOCOL
    wait_until(lambda: logged(master_log, "undecodable frame body"))
    assert_unharmed(master)


def test_unknown_message_type_after_handshake(master: MasterAPI, healthy,
                                              master_log: Path) -> None:
    _sock, channel = connect(master)
    handshake(channel, identity("rogue"), TOKEN.encode())
    channel.send({"t": "format-disk", "req": 1})
    error = read_error(channel)
    assert error.code == ErrorCode.PROTOCOL and "unknown message type" in error.message
    wait_until(lambda: logged(master_log, "closed rogue (127.0.0.1:"))
    wait_until(lambda: {n.name: n.state for n in master.nodes()}.get("rogue") is NodeState.GONE)
    assert {n.name: n.state for n in master.nodes()}["healthy"] is NodeState.READY


@pytest.mark.slow
def test_silent_connection_times_out(master: MasterAPI, healthy, master_log: Path) -> None:
    _sock, channel = connect(master)
    assert isinstance(decode(channel.read()), Hello)
    error = read_error(channel)  # we say nothing; the master gives up after 1 s
    assert error.code == ErrorCode.HANDSHAKE_TIMEOUT
    wait_until(lambda: logged(master_log, "handshake timeout after 1 s"))
    assert_unharmed(master)


def test_many_bad_peers_at_once(master: MasterAPI, healthy) -> None:
    socks: Iterator[socket.socket] = (connect(master)[0] for _ in range(50))
    opened = list(socks)
    for i, sock in enumerate(opened):
        sock.sendall(struct.pack(">I", 2**31) if i % 2 else b"\x00\x00\x00\x05" + b"\xc1" * 5)
    for sock in opened:
        sock.settimeout(30)
        try:
            while sock.recv(65536):
                pass  # drained until the master closes it
        except ConnectionResetError:
            pass
    assert_unharmed(master)
