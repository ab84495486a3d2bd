"""Property-based tests of the decoder, and a storm of random and mutated frames against a
live master while a healthy client keeps working."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import socket
import threading
import typing
from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from client.protocol import Identity, handshake
from common import PROTOCOL_VERSION, auth
from common.errors import ConnectionClosed, CorralError, ProtocolError
from common.frame_auth import TAG_BYTES, FrameMac
from common.framing import FrameChannel, FrameReader, pack_frame
from common.messages import (
    _REGISTRY,
    Heartbeat,
    Hello,
    Message,
    Register,
    Reply,
    _build,
    decode,
    heartbeat_is_well_formed,
)
from common.procs import ProcInfo  # (also registers the "proc" type)
from common.replies import REPLY_TYPES  # noqa: F401  (registers the reply types)
from common.states import NodeState
from master.api import MasterAPI
from tests.conftest import TOKEN
from tests.streams import Chunks

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats() | st.text()
    | st.binary(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@FUZZ
@given(st.binary(max_size=2048), st.lists(st.integers(0, 2048), max_size=6), st.booleans())
def test_reader_fails_only_with_protocol_errors(data: bytes, cuts: list[int],
                                                authenticated: bool) -> None:
    reader = FrameReader(Chunks(data, sorted(c for c in cuts if c <= len(data))),
                         max_frame=1024)
    if authenticated:
        reader.authenticate(FrameMac(b"k" * 32))
    try:
        while True:
            frame = reader.read_frame()
            assert isinstance(frame, dict)
            with contextlib.suppress(ProtocolError):
                decode(frame)
    except (ProtocolError, ConnectionClosed):
        pass


@FUZZ
@given(st.dictionaries(st.text(max_size=12), values, max_size=8),
       st.sampled_from(sorted(_REGISTRY)))
@pytest.mark.slow
def test_decode_accepts_only_well_typed_messages(wire: dict[str, typing.Any], tag: str) -> None:
    for candidate in (wire, {**wire, "t": tag}):
        try:
            message = decode(candidate)
        except ProtocolError:
            continue
        assert isinstance(message, Message)
        hints = typing.get_type_hints(type(message))
        for field in dataclasses.fields(message):
            assert _fits(getattr(message, field.name), hints[field.name])


def _fits(value: typing.Any, hint: typing.Any) -> bool:
    origin = typing.get_origin(hint)
    if hint is typing.Any:
        return True
    if origin in (typing.Union, __import__("types").UnionType):
        return any(_fits(value, arm) for arm in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return type(value) in (int, float)
    if origin is list:
        return isinstance(value, list)
    if origin is dict:
        return isinstance(value, dict)
    return isinstance(value, hint) and not (hint is int and isinstance(value, bool))


FIGURE = st.floats(min_value=0, allow_nan=False, allow_infinity=False)


@FUZZ
@given(st.integers(0, 2**31), st.lists(FIGURE, min_size=3, max_size=3), FIGURE,
       st.integers(0, 2**62))
def test_valid_messages_round_trip(seq: int, load: list[float], cpu: float, free: int) -> None:
    beat = Heartbeat(seq=seq, load=load, cpu_percent=cpu, mem_available=free, mem_total=free,
                     disk_free=free, processes=seq % 1000)
    body = pack_frame(beat.to_wire())[4:]
    assert decode(msgpack.unpackb(body, raw=False)) == beat


HEARTBEAT_FIELDS = [f.name for f in dataclasses.fields(Heartbeat)]
ODD = (st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats()
       | st.text(max_size=3)
       | st.lists(st.floats() | st.integers(-3, 3) | st.booleans(), max_size=4))


@FUZZ
@given(st.sampled_from([*HEARTBEAT_FIELDS, "extra"]), ODD,
       st.dictionaries(st.sampled_from(HEARTBEAT_FIELDS), ODD, max_size=2),
       st.sets(st.sampled_from(HEARTBEAT_FIELDS), max_size=2))
@example("processes", True, {}, set())
@example("cpu_percent", math.nan, {}, set())
@example("load", [0.0, -1.0, 2.0], {}, set())
@example("load", [0, 1, True], {}, set())
@example("seq", 1.0, {}, set())
@example("extra", 0, {}, {"seq"})
@example("cpu_percent", math.inf, {}, set())
@example("disk_free", -1, {}, set())
def test_heartbeats_are_judged_as_every_other_message(
        field: str, value: typing.Any, changed: dict[str, typing.Any], dropped: set[str]
) -> None:
    """Heartbeats take a quicker path through the decoder: it accepts exactly what the
    general one accepts, and what it refuses gets the general one's reason."""
    wire = {**Heartbeat(seq=1, load=[0.5, 0.25, 0], cpu_percent=2, mem_available=1,
                        mem_total=2, disk_free=3, processes=4).to_wire(), field: value,
            **changed}
    for name in dropped:
        wire.pop(name, None)

    def outcome(decoder: typing.Callable[[], Message]) -> tuple[str, typing.Any]:
        try:
            return "accepted", decoder()
        except ProtocolError as exc:
            return "refused", exc.message

    general = outcome(lambda: _build(Heartbeat, wire))
    assert outcome(lambda: decode(wire)) == general
    # The master keeps a heartbeat that passes its straight check as the map it came in:
    # the check passes exactly what the general decoder accepts, and the map holds the
    # figures that decoder would give.
    assert heartbeat_is_well_formed(wire) == (general[0] == "accepted")
    if general[0] == "accepted":
        assert Heartbeat(**{k: v for k, v in wire.items() if k != "t"}) == general[1]


# --- the storm --------------------------------------------------------------------------------

FRAMES = 10_000


def _mutate(data: bytes, rng: random.Random) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        choice = rng.random()
        if choice < 0.5 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif choice < 0.75 and data:
            del data[rng.randrange(len(data)):]
        else:
            data[rng.randrange(len(data) + 1):0] = bytes(rng.randrange(256) for _ in range(4))
    return bytes(data)


def _register_body(hello: Hello, rng: random.Random) -> bytes:
    nonce, node_id = auth.new_nonce(), f"{rng.getrandbits(128):032x}"
    name = f"fuzz{rng.randrange(10**6)}"
    claims = auth.register_claims(PROTOCOL_VERSION, node_id, name, "fuzz", 0)
    wire = Register(version=PROTOCOL_VERSION, node_id=node_id, name=name, host="fuzz",
                    nonce=nonce, mac=auth.client_proof(TOKEN.encode(), hello.nonce, nonce,
                                                       claims)).to_wire()
    return msgpack.packb(wire, use_bin_type=True)


def _one_peer(address: tuple[str, int], rng: random.Random, frames: int) -> int:
    """Open a connection and send ``frames`` bad frames of one kind; return how many were
    sent before the master closed the connection."""
    sock = socket.create_connection(address, timeout=30)
    channel = FrameChannel(sock)
    sent = 0
    try:
        kind = rng.choice(["random", "mutated-register", "after-handshake"])
        if kind == "after-handshake":
            handshake(channel, Identity(f"{rng.getrandbits(128):032x}",
                                        f"fz{rng.randrange(10**9)}", "fuzz"), TOKEN.encode())
            good = msgpack.packb(Heartbeat(seq=1, load=[0.0, 0.0, 0.0], cpu_percent=0.0,
                                           mem_available=1, mem_total=1, disk_free=1,
                                           processes=0).to_wire(), use_bin_type=True)
        else:
            hello = decode(channel.read())
            assert isinstance(hello, Hello)
            good = _register_body(hello, rng)
        for _ in range(frames):
            if kind == "random":
                body = rng.randbytes(rng.randrange(1, 200))
            else:
                body = _mutate(good, rng) or b"\xc1"
            sock.sendall(channel.writer.seal(body))  # with a valid MAC once authenticated
            sent += 1
    except OSError:
        pass
    finally:
        sock.close()
    return sent


def _storm_beside_a_healthy_client(master: MasterAPI, peer: typing.Callable[[int], int],
                                   seeds: list[int], threads: int) -> tuple[list[int], int]:
    """Run ``peer(seed)`` for every seed from ``threads`` threads while the client named
    ``healthy`` keeps answering ``run true``; return what each peer sent, and the runs."""
    sent: list[int] = []
    lock = threading.Lock()

    def worker(chunk: list[int]) -> None:
        for seed in chunk:
            count = peer(seed)
            with lock:
                sent.append(count)

    workers = [threading.Thread(target=worker, args=(seeds[i::threads],))
               for i in range(threads)]
    for thread in workers:
        thread.start()
    healthy_runs = 0
    while any(t.is_alive() for t in workers):
        assert master.run("healthy", "true").ok  # keeps working throughout
        healthy_runs += 1
    for thread in workers:
        thread.join()
    return sent, healthy_runs


@pytest.mark.slow
def test_storm_of_bad_frames(master: MasterAPI, spawn_client, master_log: Path) -> None:
    spawn_client("healthy", master.address)
    assert master.wait_ready(1, timeout=30).reached
    rng = random.Random(20261128)
    seeds = [rng.getrandbits(64) for _ in range(FRAMES // 4)]  # 5 frames each, some cut off
    totals, healthy_runs = _storm_beside_a_healthy_client(
        master, lambda seed: _one_peer(master.address, random.Random(seed), 5), seeds, 16)
    print(f"{sum(totals)} bad frames sent from {len(seeds)} peers; {healthy_runs} healthy runs")
    assert sum(totals) >= FRAMES
    assert healthy_runs > 0
    nodes = {n.name: n.state for n in master.nodes()}
    assert nodes["healthy"] is NodeState.READY
    closed = sum(1 for line in master_log.read_text().splitlines()
                 if "corral.master.session INFO closed" in line)
    assert closed >= len(seeds)  # every peer's connection ended with a log line saying why


# --- well-typed, hostile values, from a peer that holds the token -----------------------------

HOSTILE_INTS = [0, -1, 1, 2**31, 2**63 - 1, -(2**63), 2**64 - 1]
HOSTILE_FLOATS = [0.0, -1.0, 1e308, -1e308, float("nan"), float("inf"), 0.5]


def _hostile(hint: typing.Any, rng: random.Random, depth: int = 0) -> typing.Any:
    """A value of type ``hint`` (as the wire sees it) chosen to hurt: extremes, control
    characters, long strings, deep and wide lists."""
    origin = typing.get_origin(hint)
    if hint is typing.Any:
        return rng.choice([None, 1, "x", b"y", [1], {"k": "v"}])
    if origin in (typing.Union, __import__("types").UnionType):
        return _hostile(rng.choice(typing.get_args(hint)), rng, depth)
    if hint is type(None):
        return None
    if hint is bool:
        return rng.random() < 0.5
    if hint is int:
        return rng.choice([*HOSTILE_INTS, rng.randrange(-10**9, 10**9)])
    if hint is float:
        return rng.choice(HOSTILE_FLOATS)
    if hint is str:
        return "".join(chr(rng.choice([0, 7, 10, 13, 27, 0x9b, 65, 0x2028]))
                       for _ in range(rng.choice([0, 1, 64, 3000])))
    if hint is bytes:
        return rng.randbytes(rng.choice([0, 1, 32, 4096]))
    if origin is list:
        count = 0 if depth > 2 else rng.choice([0, 1, 3, 50])
        return [_hostile(typing.get_args(hint)[0], rng, depth + 1) for _ in range(count)]
    if origin is dict:
        key, item = typing.get_args(hint)
        return {_hostile(key, rng, depth + 1): _hostile(item, rng, depth + 1)
                for _ in range(rng.choice([0, 2, 20]))}
    if isinstance(hint, type) and issubclass(hint, Message):
        return _hostile_wire(hint, rng, depth + 1)
    raise TypeError(hint)


def _hostile_wire(cls: type[Message], rng: random.Random, depth: int = 0) -> dict[str, typing.Any]:
    hints = typing.get_type_hints(cls)
    wire = {f.name: _hostile(hints[f.name], rng, depth) for f in dataclasses.fields(cls)}
    wire["t"] = cls.TAG
    return wire


def _hostile_session(address: tuple[str, int], seed: int, messages: int) -> int:
    """Authenticate, then send well-typed messages of every kind with hostile values until
    the master closes the connection; return how many were sent."""
    rng = random.Random(seed)
    sock = socket.create_connection(address, timeout=30)
    channel = FrameChannel(sock)
    sent = 0
    try:
        handshake(channel, Identity(f"{rng.getrandbits(128):032x}", f"hostile{seed % 50}",
                                    "fuzz"), TOKEN.encode())
        kinds = sorted(_REGISTRY.values(), key=lambda cls: cls.TAG)
        for _ in range(messages):
            cls = rng.choice(kinds)
            body = msgpack.packb(_hostile_wire(cls, rng), use_bin_type=True)
            if len(body) < 8 * 1024 * 1024 - TAG_BYTES:
                sock.sendall(channel.writer.seal(body))  # authenticated: reaches the decoder
                sent += 1
    except (OSError, CorralError):
        pass
    finally:
        sock.close()
    return sent


@pytest.mark.slow
def test_hostile_well_typed_messages_leave_master_memory_bounded(
        master: MasterAPI, spawn_client, master_log: Path) -> None:
    import psutil

    spawn_client("healthy", master.address)
    assert master.wait_ready(1, timeout=30).reached
    me = psutil.Process()

    def storm(seeds: range) -> int:
        sent, runs = _storm_beside_a_healthy_client(
            master, lambda seed: _hostile_session(master.address, seed, 40), list(seeds), 8)
        assert runs > 0 and sum(sent) > 0
        return sum(sent)

    storm(range(0, 100))  # warm-up: caches, first-time allocations
    before = me.memory_info().rss
    sent = storm(range(100, 500))
    grown = (me.memory_info().rss - before) / 2**20
    print(f"{sent} hostile messages over 400 sessions; master process grew {grown:.1f} MiB")
    assert grown < 20
    states = {n.name: n.state for n in master.nodes()}
    assert states["healthy"] is NodeState.READY
    lines = master_log.read_text().count("\n")
    assert lines < 500 * 8  # a few lines per session at most, never one per message


@FUZZ
@given(st.sampled_from(sorted(tag for tag, cls in _REGISTRY.items() if "Any" not in str(
    typing.get_type_hints(cls)))).flatmap(lambda tag: st.from_type(_REGISTRY[tag]))
    | st.builds(Reply, req=st.integers(0, 2**63), value=values | st.lists(
        st.from_type(ProcInfo), max_size=3)))
def test_to_wire_bytes_are_those_of_every_field_in_turn(message: Message) -> None:
    """``to_wire``'s one-copy path for types that hold no nested message puts the same
    bytes on the wire as turning each field into its wire form in turn."""
    reference = {field.name: _field_wire(getattr(message, field.name))
                 for field in dataclasses.fields(message)}
    reference["t"] = message.TAG
    assert repr(message.to_wire()) == repr(reference)  # same fields, values and order


def _field_wire(value: typing.Any) -> typing.Any:
    if isinstance(value, Message):
        return value.to_wire()
    if isinstance(value, list):
        return [_field_wire(item) for item in value]
    return value
