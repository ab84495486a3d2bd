"""A node fed by a data link lands a chained copy only when what came through the chain
matches the master's SHA-256, whichever of the two arrives first; a link lost part-way, or
data from the wrong side, leaves nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.chain import DataLinks, Inbound
from client.files import Uploads
from client.sandbox import Sandbox
from common.errors import ErrorCode
from common.landing import TEMP_PREFIX
from common.messages import FailReply, Message, PutBegin, PutChunk, PutEnd, PutEntry, Reply
from common.stream_digest import StreamDigest

TRANSFER = "t-1"
FIRST, REST = b"a" * 1000, b"b" * 500


@pytest.fixture
def node(tmp_path: Path) -> tuple[Uploads, list[Message], Path]:
    """The second node of a chain: fed by n1, forwarding to nobody."""
    work = tmp_path / "work"
    work.mkdir()
    sent: list[Message] = []
    uploads = Uploads(Sandbox(work), None, DataLinks("n2", b"token", None, 1 << 23),
                      sent.append)
    assert uploads.handle(PutBegin(req=7, dest="f.bin", into=False, transfer=TRANSFER,
                                   upstream="n1")) is None
    return uploads, sent, work


def stream(first: bytes = FIRST) -> list[PutEntry | PutChunk | PutEnd]:
    return [PutEntry(req=0, relpath="f.bin", kind="file", mode=0o640, size=1500, data=first),
            PutChunk(req=0, data=REST), PutEnd(req=0)]


def seal() -> PutEnd:
    digest = StreamDigest()
    digest.entry("f.bin", "file", 0o640, 1500, "")
    digest.data(FIRST)
    digest.data(REST)
    return PutEnd(req=7, digest=digest.digest())


def answers(sent: list[Message]) -> list[Message]:
    return [message for message in sent if isinstance(message, (Reply, FailReply))]


def leftovers(work: Path) -> list[Path]:
    return [p for p in work.rglob("*") if p.name.startswith(TEMP_PREFIX)]


@pytest.mark.parametrize("seal_first", [False, True])
def test_the_copy_lands_once_stream_and_seal_agree(node, seal_first: bool) -> None:
    uploads, sent, work = node
    if seal_first:
        assert uploads.handle(seal()) is None
    for frame in stream():
        uploads.from_link(TRANSFER, frame)
    if not seal_first:
        sent.append(uploads.handle(seal()))  # type: ignore[arg-type]
    reply = answers(sent)
    assert len(reply) == 1 and isinstance(reply[0], Reply), reply
    assert (work / "f.bin").read_bytes() == FIRST + REST
    assert (work / "f.bin").stat().st_mode & 0o777 == 0o640


def test_bytes_altered_on_the_way_land_nothing(node) -> None:
    uploads, sent, work = node
    altered = b"a" * 999 + b"X"  # same size: only the end-to-end check can tell
    for frame in stream(altered):
        uploads.from_link(TRANSFER, frame)
    sent.append(uploads.handle(seal()))  # type: ignore[arg-type]
    (reply,) = answers(sent)
    assert isinstance(reply, FailReply) and reply.code == ErrorCode.PROTOCOL
    assert "does not match the master's SHA-256" in reply.message
    assert not (work / "f.bin").exists() and leftovers(work) == []


def test_a_link_lost_part_way_fails_the_copy_and_leaves_nothing(node) -> None:
    uploads, sent, work = node
    uploads.from_link(TRANSFER, stream()[0])
    assert leftovers(work)  # the first part is in a temporary file
    uploads.link_lost(TRANSFER, "connection lost: reset")
    (reply,) = answers(sent)
    assert isinstance(reply, FailReply) and reply.code == ErrorCode.UPSTREAM_LOST
    assert "from n1" in reply.message
    assert uploads.handle(seal()) is None  # the master's seal, late, is dropped quietly
    assert not (work / "f.bin").exists() and leftovers(work) == []


def test_data_from_the_master_for_a_node_fed_by_a_link_is_refused(node) -> None:
    uploads, _sent, work = node
    reply = uploads.handle(PutChunk(req=7, data=b"injected"))
    assert isinstance(reply, FailReply) and "fed by a link" in reply.message
    assert leftovers(work) == []


def test_a_second_link_for_the_same_copy_is_refused(node) -> None:
    uploads, _sent, _work = node
    assert uploads.attach(Inbound(TRANSFER, None))
    assert not uploads.attach(Inbound(TRANSFER, None))
    assert not uploads.attach(Inbound("another", None))
