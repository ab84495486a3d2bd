"""The two spawn methods, side by side, in this process (no network)."""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest

from client.spawn import SPAWNERS, SpawnFailed, SpawnSpec, find_program
from tests.conftest import SPAWN_METHODS

SH = find_program("sh", Path("/")) or "/bin/sh"
CAT = find_program("cat", Path("/")) or "/bin/cat"


@pytest.fixture(params=SPAWN_METHODS)
def spawner(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    return SPAWNERS[request.param]


def finish(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_output_cwd_env_and_session(spawner, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    log = tmp_path / "out.log"
    script = 'echo out1; echo err1 >&2; echo out2; pwd; echo "$GREETING"; ps -o sid= -p $$'
    pid = spawner(SpawnSpec(program=SH, argv=["sh", "-c", script], cwd=tmp_path,
                            env={**os.environ, "GREETING": "hello"}, stdout_path=log))
    assert finish(pid) == 0
    lines = log.read_text().splitlines()
    assert lines[:5] == ["out1", "err1", "out2", str(tmp_path), "hello"]
    assert int(lines[5]) == pid  # its own session, led by itself


def test_stdin_from_dev_null_or_a_file(spawner, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    log = tmp_path / "out.log"
    pid = spawner(SpawnSpec(program=CAT, argv=["cat"], cwd=tmp_path, env=dict(os.environ),
                            stdout_path=log))
    assert finish(pid) == 0 and log.read_text() == ""
    feed = tmp_path / "feed"
    feed.write_text("line one\nline two\n")
    pid = spawner(SpawnSpec(program=CAT, argv=["cat"], cwd=tmp_path, env=dict(os.environ),
                            stdout_path=log, stdin_path=feed))
    assert finish(pid) == 0 and log.read_text() == "line one\nline two\n"


def children() -> set[int]:
    """This process's children, zombies included (other tests may have some running)."""
    return {child.pid for child in psutil.Process().children()}


def test_missing_program_is_a_spawn_error(spawner, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    before = children()
    with pytest.raises(SpawnFailed, match="No such file or directory"):
        spawner(SpawnSpec(program=str(tmp_path / "no-such-program-xyz"),
                          argv=["no-such-program-xyz"], cwd=tmp_path, env=dict(os.environ),
                          stdout_path=tmp_path / "log"))
    assert children() == before  # no child left behind, not even a zombie


def test_not_executable_is_a_spawn_error(spawner, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    with pytest.raises(SpawnFailed, match="Permission denied"):
        spawner(SpawnSpec(program=str(script), argv=[str(script)], cwd=tmp_path,
                          env=dict(os.environ), stdout_path=tmp_path / "log"))


def test_pipes_for_stdout_and_stderr(spawner, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    pid = spawner(SpawnSpec(program=SH, argv=["sh", "-c", "echo to-out; echo to-err >&2"],
                            cwd=tmp_path, env=dict(os.environ), stdout_fd=out_w,
                            stderr_fd=err_w))
    os.close(out_w)
    os.close(err_w)
    assert finish(pid) == 0
    assert os.read(out_r, 100) == b"to-out\n"
    assert os.read(err_r, 100) == b"to-err\n"


def test_a_file_that_cannot_be_opened_is_named_not_the_program(spawner, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    before = children()
    with pytest.raises(SpawnFailed, match=f"No such file or directory: {tmp_path}/no-stdin$"):
        spawner(SpawnSpec(program=CAT, argv=["cat"], cwd=tmp_path, env=dict(os.environ),
                          stdout_path=tmp_path / "log", stdin_path=tmp_path / "no-stdin"))
    with pytest.raises(SpawnFailed, match=f"No such file or directory: {tmp_path}/gone"):
        spawner(SpawnSpec(program=CAT, argv=["cat"], cwd=tmp_path, env=dict(os.environ),
                          stdout_path=tmp_path / "gone" / "log"))
    assert children() == before  # not even a zombie
