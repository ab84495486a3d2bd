"""Frames, message validation, the handshake proofs and node sets, without any network."""

from __future__ import annotations

import socket
import struct

import msgpack
import pytest

from common import auth, tcp_probe
from common.errors import ConnectionClosed, FrameTooLarge, ProtocolError, UsageError
from common.frame_auth import FrameMac
from common.framing import DEFAULT_MAX_FRAME, FrameReader, FrameWriter, pack_frame, send_parts
from common.messages import Heartbeat, Hello, Ping, Reply, decode
from common.nodeset import fold, select
from tests.streams import Chunks, Flood


def _pair() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair()


def test_frames_round_trip_in_order() -> None:
    left, right = _pair()
    beat = Heartbeat(seq=1, load=[0.5, 0.25, 0.0], cpu_percent=3.0, mem_available=1,
                     mem_total=2, disk_free=3, processes=0)
    left.sendall(pack_frame(beat.to_wire()) + pack_frame(Ping(req=7).to_wire()))
    reader = FrameReader(right)
    assert decode(reader.read_frame()) == beat
    assert decode(reader.read_frame()) == Ping(req=7)


def test_big_frame_grows_the_buffer() -> None:
    left, right = _pair()
    blob = bytes(range(256)) * 4096  # 1 MiB
    payload = pack_frame(Reply(req=1, value=blob).to_wire())
    left.setblocking(True)
    import threading

    sender = threading.Thread(target=left.sendall, args=(payload,))
    sender.start()
    message = decode(FrameReader(right).read_frame())
    sender.join()
    assert isinstance(message, Reply) and message.value == blob


def _beats(count: int) -> list[Heartbeat]:
    return [Heartbeat(seq=i, load=[0.5, 0.25, 0.0], cpu_percent=3.0, mem_available=1,
                      mem_total=2, disk_free=3, processes=i) for i in range(count)]


def test_frames_queued_together_are_read_in_one_call() -> None:
    beats = _beats(3)
    stream = Chunks(b"".join(pack_frame(b.to_wire()) for b in beats), [])
    reader = FrameReader(stream)
    assert [decode(reader.read_frame()) for _ in beats] == beats
    assert stream.reads == 1
    with pytest.raises(ConnectionClosed, match="closed by peer"):
        reader.read_frame()


@pytest.mark.parametrize("cut", [1, 2, 3, 5, 7, 50, 128])
def test_frames_cut_anywhere_come_out_whole(cut: int) -> None:
    beats = _beats(5)
    big = Reply(req=9, value=b"x" * 100_000)  # grows the buffer, which shrinks after it
    data = b"".join(pack_frame(m.to_wire()) for m in [beats[0], big, *beats[1:]])
    reader = FrameReader(Chunks(data, list(range(cut, len(data), cut))))
    assert [decode(reader.read_frame()) for _ in range(6)] == [beats[0], big, *beats[1:]]


@pytest.mark.parametrize("small_size", [100, 1_000, 30_000])
def test_a_buffer_grown_for_one_big_frame_is_given_back(small_size: int) -> None:
    """One frame at the 8 MiB limit, then small ones from a peer that keeps the socket
    full: once what was read ahead into the big buffer is taken, the reader holds a small
    buffer again and reads ahead no more than that."""
    mac_key = b"k" * 32
    writer = FrameWriter()
    writer.authenticate(FrameMac(mac_key))
    big = writer.frame({"blob": b"b" * (DEFAULT_MAX_FRAME - 100)})
    count = 3 * DEFAULT_MAX_FRAME // small_size  # three big buffers' worth
    smalls = [writer.frame({"n": i, "pad": b"s" * small_size}) for i in range(count)]
    small_buffer = max(512, *(len(frame) for frame in smalls))
    stream = Flood(big + b"".join(smalls))
    reader = FrameReader(stream)
    reader.authenticate(FrameMac(mac_key))
    assert len(reader.read_frame()["blob"]) == DEFAULT_MAX_FRAME - 100
    assert reader.buffer_size >= DEFAULT_MAX_FRAME - 100
    half = count // 2
    assert [reader.read_frame()["n"] for _ in range(half)] == list(range(half))
    assert reader.buffer_size <= small_buffer
    assert max(stream.rooms[-10:]) <= small_buffer
    assert [reader.read_frame()["n"] for _ in range(half, count)] == list(range(half, count))
    assert reader.buffer_size <= small_buffer


def test_a_plain_frame_and_the_first_authenticated_one_arrive_together() -> None:
    """The welcome and the frame sent right after it can come in one read: the MAC applies
    from the frame after ``authenticate`` on, whatever was read ahead."""
    mac_key = b"k" * 32
    writer = FrameWriter()
    welcome = writer.frame({"n": 1})
    writer.authenticate(FrameMac(mac_key))
    reader = FrameReader(Chunks(welcome + writer.frame({"n": 2}) + writer.frame({"n": 3}), []))
    assert reader.read_frame() == {"n": 1}
    reader.authenticate(FrameMac(mac_key))
    assert reader.read_frame() == {"n": 2}
    assert reader.read_frame() == {"n": 3}


def test_a_frame_read_ahead_still_meets_the_size_limit() -> None:
    """The limit rises once the peer is authenticated; a frame already held is judged by
    the limit in force when it is taken."""
    small, large = pack_frame({"n": 1}), pack_frame({"blob": b"y" * 300})
    reader = FrameReader(Chunks(small + large, []), max_frame=100)
    assert reader.read_frame() == {"n": 1}
    with pytest.raises(FrameTooLarge, match="exceeds the 100-byte limit"):
        reader.read_frame()


def test_oversize_length_is_refused_before_reading_the_body() -> None:
    left, right = _pair()
    left.sendall(struct.pack(">I", 2**31))  # no body follows: reading it would hang
    with pytest.raises(FrameTooLarge, match="exceeds"):
        FrameReader(right, max_frame=1024).read_frame()


def test_garbage_body_is_a_protocol_error() -> None:
    left, right = _pair()
    left.sendall(struct.pack(">I", 3) + b"\xc1\xc1\xc1")
    with pytest.raises(ProtocolError, match="undecodable"):
        FrameReader(right).read_frame()


def test_non_map_body_is_a_protocol_error() -> None:
    left, right = _pair()
    body = msgpack.packb([1, 2, 3])
    left.sendall(struct.pack(">I", len(body)) + body)
    with pytest.raises(ProtocolError, match="not a map"):
        FrameReader(right).read_frame()


def test_close_between_frames_and_inside_a_frame() -> None:
    left, right = _pair()
    left.close()
    with pytest.raises(ConnectionClosed, match="closed by peer"):
        FrameReader(right).read_frame()
    left, right = _pair()
    left.sendall(struct.pack(">I", 10) + b"abc")
    left.close()
    with pytest.raises(ConnectionClosed, match="middle of a frame"):
        FrameReader(right).read_frame()


@pytest.mark.parametrize(
    ("wire", "complaint"),
    [
        ({"x": 1}, "no type tag"),
        ({"t": "launch-missiles"}, "unknown message type"),
        ({"t": "ping"}, "missing field 'req'"),
        ({"t": "ping", "req": "seven"}, "wrong type"),
        ({"t": "ping", "req": True}, "wrong type"),
        ({"t": "ping", "req": 1, "extra": 2}, "unexpected field"),
        ({"t": "hb", "seq": 1, "load": ["high"], "cpu_percent": 1.0, "mem_available": 1,
          "mem_total": 1, "disk_free": 1, "processes": 1}, "wrong type"),
    ],
)
def test_decode_rejects_malformed_messages(wire: dict[str, object], complaint: str) -> None:
    with pytest.raises(ProtocolError, match=complaint):
        decode(wire)


def test_decode_accepts_ints_for_floats() -> None:
    hello = decode({"t": "hello", "version": 1, "nonce": b"n"})
    assert hello == Hello(version=1, nonce=b"n")
    beat = decode({"t": "hb", "seq": 1, "load": [1, 2, 3], "cpu_percent": 5,
                   "mem_available": 1, "mem_total": 1, "disk_free": 1, "processes": 1})
    assert isinstance(beat, Heartbeat) and beat.load == [1, 2, 3]


def test_proofs_depend_on_token_nonces_direction_and_fields() -> None:
    master_nonce, client_nonce = auth.new_nonce(), auth.new_nonce()
    fields = auth.register_claims(2, "a" * 32, "n1", "host", 7)
    client_mac = auth.client_proof(b"t", master_nonce, client_nonce, fields)
    assert auth.verify(client_mac, auth.client_proof(b"t", master_nonce, client_nonce, fields))
    assert not auth.verify(client_mac, auth.client_proof(b"u", master_nonce, client_nonce,
                                                         fields))
    assert not auth.verify(client_mac, auth.client_proof(b"t", client_nonce, master_nonce,
                                                         fields))
    renamed = auth.register_claims(2, "a" * 32, "n2", "host", 7)
    assert not auth.verify(client_mac, auth.client_proof(b"t", master_nonce, client_nonce,
                                                         renamed))
    # One side's proof can never be replayed as the other's.
    assert not auth.verify(client_mac, auth.master_proof(b"t", master_nonce, client_nonce,
                                                         fields))
    # No two field lists run together into the same bytes.
    assert auth.claims("ab", "c") != auth.claims("a", "bc")
    assert auth.claims(1) != auth.claims("1")
    assert auth.claims(2, "n1").hex() == "69000000013273000000026e31"  # docs/protocol.md


def test_master_creates_a_private_token_once(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "sub" / "token"
    token, created = auth.ensure_token(path)
    assert created and len(token) >= 32
    assert path.stat().st_mode & 0o777 == 0o600
    assert auth.ensure_token(path) == (token, False)


def test_client_token_from_environment(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv(auth.TOKEN_ENV, "from-env")
    assert auth.client_token(None) == b"from-env"
    (tmp_path / "t").write_text("from-file\n")
    assert auth.client_token(tmp_path / "t") == b"from-file"


def test_node_sets() -> None:
    names = ["n1", "n2", "n3", "n10", "web1"]
    assert select("n[1-3]", names) == ["n1", "n2", "n3"]
    assert select("n[1,10],web1", names) == ["n1", "n10", "web1"]
    assert select("web*", names) == ["web1"]
    with pytest.raises(UsageError, match="unknown node: n4"):
        select("n[3-4]", names)
    with pytest.raises(UsageError, match="no node matches"):
        select("db*", names)
    assert fold(["n1", "n2", "n3"]) == "n[1-3]"


def test_more_parts_than_one_sendmsg_takes_all_arrive_in_order() -> None:
    """A burst of frames sent together (thousands of exit events) is more buffers than
    the kernel takes in one sendmsg (IOV_MAX, 1,024): every byte still arrives, in order."""
    parts = [f"part {n};".encode() for n in range(3000)]
    left, right = socket.socketpair()
    with left, right:
        right.setblocking(True)
        send_parts(left, list(parts))
        left.shutdown(socket.SHUT_WR)
        received = b"".join(iter(lambda: right.recv(65536), b""))
    assert received == b"".join(parts)


class _TcpInfo:
    """A socket whose kernel reports ``retransmits``, ``unacked`` and ``last_ack_ms``."""

    def __init__(self, retransmits: int, unacked: int, last_ack_ms: int) -> None:
        bytes_ = [0] * 8
        bytes_[2] = retransmits
        words = [0] * 13
        words[4], words[12] = unacked, last_ack_ms
        self.raw = struct.pack("8B13I", *bytes_, *words)

    def getsockopt(self, level: int, option: int, size: int) -> bytes:
        return self.raw[:size]


@pytest.mark.skipif(not hasattr(socket, "TCP_INFO"), reason="no TCP_INFO here")
def test_a_heartbeat_not_yet_acknowledged_is_not_a_silent_peer() -> None:
    """Right after the client was held up (a loaded machine), the heartbeat it just sent
    waits for its ACK while the last ACK is long ago: no reason to drop the link. Data
    the kernel had to send again and that is still unacknowledged is."""
    assert tcp_probe.unacknowledged_for(_TcpInfo(0, 0, 5_000)) == 0.0  # idle link
    assert tcp_probe.unacknowledged_for(_TcpInfo(0, 1, 5_000)) == 0.0  # just sent
    assert tcp_probe.unacknowledged_for(_TcpInfo(2, 3, 5_000)) == 5.0  # resent, unanswered
    left, right = _pair()
    with left, right:
        assert tcp_probe.unacknowledged_for(left) is None  # a UNIX socket: not TCP
