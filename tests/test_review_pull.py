"""Second check of what a pull may do on the master, from a node holding the token."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from common.landing import TEMP_PREFIX
from master.api import MasterAPI
from tests.test_hardening import file_frames, pulling, scripted


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_file_begun_before_the_last_ended_is_refused_and_nothing_left(
        master: MasterAPI, tmp_path: Path) -> None:
    out = tmp_path / "out"
    begun = [{"t": "getf", "relpath": f"f{i}", "kind": "file", "mode": 0o644, "size": 10}
             for i in range(200)]
    scripted(master, "evil", pulling(begun))
    before = open_descriptors()
    group = master.pull("evil", ["x"], str(out))
    assert "evil" in group.errors
    leftovers = [p for p in out.rglob("*") if p.name.startswith(TEMP_PREFIX)]
    assert leftovers == []
    assert open_descriptors() <= before + 5


def test_a_pull_that_ends_in_the_middle_of_a_file_is_that_nodes_error(
        master: MasterAPI, tmp_path: Path) -> None:
    out = tmp_path / "out"
    frames = file_frames("whole", b"abc")
    half = [{"t": "getf", "relpath": "half", "kind": "file", "mode": 0o644, "size": 10},
            {"t": "getc", "data": b"abc"}]
    scripted(master, "evil", pulling([*frames, *half]))
    group = master.pull("evil", ["x"], str(out))
    assert "in the middle of a file" in group.errors["evil"].message
    assert [p.name for p in (out / "evil").iterdir()] == ["whole"]


def test_a_file_that_grows_while_it_is_pulled_is_sent_as_announced(tmp_path: Path) -> None:
    """A running process's log grows while it is pulled: the node sends the size it
    announced (the file as it was), never more, which the master would refuse."""
    from client.files import stream_out
    from client.sandbox import Sandbox
    from common.messages import GetChunk, GetFile, GetRequest, Message

    work = tmp_path / "work"
    work.mkdir()
    log = work / "job.log"
    log.write_bytes(b"a" * 3_000_000)
    announced: list[int] = []
    sent: list[int] = []

    def send(message: Message) -> None:
        if isinstance(message, GetFile):
            announced.append(message.size)
        elif isinstance(message, GetChunk):
            sent.append(len(message.data))
            assert sum(sent) <= 3_000_000, "sent more than announced"
            with open(log, "ab") as writer:  # the process keeps writing
                writer.write(b"b" * 1000)

    stream_out(Sandbox(work), GetRequest(req=1, path="job.log"), send)
    assert announced == [3_000_000] and sum(sent) == 3_000_000


def test_a_local_file_that_grows_while_it_is_copied_lands_as_planned(
        master: MasterAPI, spawn_client, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from master import transfers

    client = spawn_client("n1", master.address)
    assert master.wait_ready(1, timeout=30).reached
    source = tmp_path / "growing.log"
    source.write_bytes(b"a" * (3 * transfers.CHUNK))
    counting = transfers._Meter.add

    grown = []

    def add_and_grow(meter: transfers._Meter, count: int) -> None:
        counting(meter, count)
        if len(grown) < 10:  # the writer keeps going while it is copied, for a while
            grown.append(1000)
            with open(source, "ab") as writer:
                writer.write(b"b" * 1000)

    monkeypatch.setattr(transfers._Meter, "add", add_and_grow)
    group = master.copy("n1", [str(source)], "growing.log")
    assert group.ok, group.errors
    assert (client.workdir / "growing.log").read_bytes() == b"a" * (3 * transfers.CHUNK)


def test_links_that_climb_through_other_links_are_not_planted(
        master: MasterAPI, tmp_path: Path) -> None:
    """Each target, read as text, stays inside the pulled folder; but through the links
    before it, the last one leads out of it, then out of LOCAL_DIR."""
    from tests.test_hardening import pulling, scripted

    def link(relpath: str, target: str) -> dict:
        return {"t": "getf", "relpath": relpath, "kind": "link", "mode": 0o777, "size": 0,
                "target": target}

    out = tmp_path / "out"
    frames = [{"t": "getf", "relpath": "top", "kind": "dir", "mode": 0o755, "size": 0},
              link("top/q", "."), link("top/p", "q/.."), link("top/s", "p/.."),
              link("top/u", "s/..")]
    scripted(master, "evil", pulling(frames))
    group = master.pull("evil", ["top"], str(out))
    planted = [p for p in out.rglob("*") if p.is_symlink()]
    outside = [p for p in planted if not p.resolve().is_relative_to(out / "evil" / "top")]
    assert outside == [], f"links leading out: {outside}"
    assert "evil" in group.errors


def test_a_loop_of_links_is_that_nodes_error(master: MasterAPI, tmp_path: Path) -> None:
    from tests.test_hardening import pulling, scripted

    frames = [{"t": "getf", "relpath": "top", "kind": "dir", "mode": 0o755, "size": 0},
              {"t": "getf", "relpath": "top/a", "kind": "link", "mode": 0o777, "size": 0,
               "target": "b"},
              {"t": "getf", "relpath": "top/b", "kind": "link", "mode": 0o777, "size": 0,
               "target": "a"},
              *file_frames("top/a/x", b"abc")]
    scripted(master, "evil", pulling(frames))
    group = master.pull("evil", ["top"], str(tmp_path / "out"))
    assert "evil" in group.errors
    assert "RuntimeError" not in group.errors["evil"].message
