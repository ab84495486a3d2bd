"""Second check of what a pull may do on the master, from a node holding the token."""

from __future__ import annotations

import os
from pathlib import Path

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
