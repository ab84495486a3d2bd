"""State files replaced by something that is not one (a FIFO, a symbolic link to
``/dev/zero``, a huge file) or hand-edited beyond the limits: the master and the client
start anyway, set each aside with one line in their log, and work. Real processes."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from common.varnames import MAX_VALUE, MAX_VARIABLES
from tests.harness import PATIENCE, MasterProcess, wait_until
from tests.test_variables import control_of, corral


@pytest.fixture
def start_master(spawn_master, tmp_path: Path) -> Iterator[object]:  # type: ignore[no-untyped-def]
    """A headless master; one that hangs before it listens is killed (the test fails
    with what it printed) instead of hanging the suite."""

    def kill_stuck() -> None:
        for child in psutil.Process().children():
            if str(tmp_path / "master-state") in " ".join(child.cmdline()):
                child.kill()

    def start() -> MasterProcess:
        timer = threading.Timer(PATIENCE, kill_stuck)
        timer.start()
        try:
            return spawn_master(extra=["--no-console"])  # type: ignore[no-any-return]
        finally:
            timer.cancel()

    yield start


def state_folder(tmp_path: Path) -> Path:
    state = tmp_path / "master-state"
    state.mkdir(mode=0o700, exist_ok=True)
    return state


def sparse_file(path: Path, size: int) -> None:
    with open(path, "wb") as out:
        out.truncate(size)  # no disk used: only a reader that trusts it would suffer


@pytest.mark.slow
def test_master_state_files_that_are_not_files(start_master, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    state = state_folder(tmp_path)
    os.mkfifo(state / "variables.json")
    os.symlink("/dev/zero", state / "environment.json")
    os.mkfifo(state / "jobs.jsonl")
    sparse_file(state / "nodes.json", 1 << 40)  # 1 TiB
    os.mkfifo(state / "pull-partials")
    master = start_master()
    control = control_of(master)
    assert corral(control, "var", "list").stdout == "no variables\n"
    assert corral(control, "var", "set", "a", "1").returncode == 0
    assert corral(control, "var", "get", "a").stdout == "1\n"
    assert corral(control, "setenv", "K=v").returncode == 0
    log = master.log_text()
    for name, why in (("variables.json", "not a regular file (a FIFO)"),
                      ("environment.json", "a symbolic link, not a file (never followed)"),
                      ("jobs.jsonl", "not a regular file (a FIFO)"),
                      ("nodes.json", "1,099,511,627,776 bytes, more than the 67,108,864 "
                                     "this file may hold"),
                      ("pull-partials", "not a regular file (a FIFO)")):
        assert f"state file {state / name} refused: {why}; kept as {state / name}.corrupt" \
            in log, name
        assert (state / f"{name}.corrupt").exists() or (state / f"{name}.corrupt").is_symlink()
    assert json.loads((state / "variables.json").read_text())["variables"][0]["name"] == "a"


@pytest.mark.slow
def test_state_files_are_never_written_through_what_sits_at_their_temporary_name(  # type: ignore[no-untyped-def]
        start_master, tmp_path: Path) -> None:
    """Each state file is written to ``.NAME.tmp`` first: a FIFO there would block the
    writer for ever, a symbolic link would carry the content elsewhere. Both are replaced
    by a fresh file."""
    state = state_folder(tmp_path)
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    os.mkfifo(state / ".variables.json.tmp")
    os.symlink(victim, state / ".environment.json.tmp")
    os.symlink(victim, state / ".jobs.jsonl.tmp")
    control = control_of(start_master())
    assert corral(control, "var", "set", "a", "1").returncode == 0
    assert corral(control, "setenv", "K=v").returncode == 0
    assert corral(control, "var", "get", "a").stdout == "1\n"
    assert victim.read_text() == "keep\n"
    assert json.loads((state / "environment.json").read_text()) == {"environment": {"K": "v"}}
    assert not any(path.name.endswith(".tmp") for path in state.iterdir())


def store(*entries: tuple[str, str]) -> str:
    return json.dumps({"version": 1, "variables": [
        {"name": name, "value": value, "set_by": "operator", "set_at": 1.0, "version": 1}
        for name, value in entries]})


BEYOND_THE_LIMITS = {
    "too many": (store(*((f"v{i}", "x") for i in range(MAX_VARIABLES + 1))),
                 "10,001 variables, more than the 10,000 a store may hold"),
    "bad name": (store(("ok", "1"), ("../evil", "2")),
                 "variable 2: bad name '../evil'"),
    "value too big": (store(("big", "x" * (MAX_VALUE + 1))),
                      "variable 1: the value is 65,537 bytes; at most 65,536"),
    "too much in all": (store(*((f"v{i}", "x" * MAX_VALUE) for i in range(257))),
                        "its variables hold 16,843,670 bytes, more than the 16,777,216"),
    "twice": (store(("a", "1"), ("a", "2")), "variable 2: a is there twice"),
    "not text": (json.dumps({"variables": [{"name": "a", "value": 5, "set_by": "x",
                                            "set_at": 1, "version": 1}]}),
                 "variable 1: a value must be text"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(BEYOND_THE_LIMITS))
def test_a_hand_edited_store_beyond_the_limits_is_set_aside(start_master, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                            case: str) -> None:
    text, why = BEYOND_THE_LIMITS[case]
    path = state_folder(tmp_path) / "variables.json"
    path.write_text(text)
    master = start_master()
    assert corral(control_of(master), "var", "list").stdout == "no variables\n"
    assert f"state file {path} refused: {why}" in master.log_text()
    assert path.with_name("variables.json.corrupt").read_text() == text


@pytest.mark.slow
def test_a_store_at_the_limits_is_loaded(start_master, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = state_folder(tmp_path) / "variables.json"
    path.write_text(store(*((f"v{i}", "é") for i in range(MAX_VARIABLES))))
    control = control_of(start_master())
    assert corral(control, "var", "get", f"v{MAX_VARIABLES - 1}").stdout == "é\n"
    full = corral(control, "var", "set", "one_more", "x")
    assert full.returncode == 2 and "the store is full" in full.stderr


def test_a_store_file_larger_than_any_store_is_not_read(tmp_path: Path) -> None:
    from common.statefile import StateFileRefused, read_state_file
    from master.variables import MAX_STORE_FILE

    path = tmp_path / "variables.json"
    sparse_file(path, MAX_STORE_FILE + 1)
    with pytest.raises(StateFileRefused, match="more than the"):
        read_state_file(path, MAX_STORE_FILE)


def test_a_file_longer_than_its_size_says_is_cut(tmp_path: Path) -> None:
    """The limit holds while reading too: a file may grow, and /proc files say 0 bytes."""
    from common.statefile import StateFileRefused, read_state_file

    maps = Path("/proc/self/maps")
    assert maps.stat().st_size == 0 and len(maps.read_bytes()) > 100
    with pytest.raises(StateFileRefused, match="more than the 100 bytes"):
        read_state_file(maps, 100)


@pytest.mark.slow
def test_client_state_files_that_are_not_files(start_master, spawn_client) -> None:  # type: ignore[no-untyped-def]
    master = start_master()
    control = control_of(master)
    first = spawn_client("n1", master.address)
    assert corral(control, "list", "--wait", "1", "--timeout", "30").returncode == 0
    node_id = first.node_id
    first.stop()
    state = first.state_dir
    (state / "processes.jsonl").unlink(missing_ok=True)
    os.mkfifo(state / "processes.jsonl")
    (state / "node-id").unlink()
    os.symlink("/dev/zero", state / "node-id")
    os.mkfifo(state / "partial-files")
    again = spawn_client("n1", master.address)
    wait_until(lambda: "READY" in corral(control, "list").stdout, what="n1 back")
    assert corral(control, "run", "-w", "n1", "--", "true").returncode == 0
    log = again.log_text()
    assert (f"state file {state / 'processes.jsonl'} refused: not a regular file (a FIFO); "
            "kept as") in log
    assert (f"state file {state / 'node-id'} refused: a symbolic link, not a file (never "
            "followed)") in log
    assert f"state file {state / 'partial-files'} refused: not a regular file (a FIFO)" in log
    assert again.node_id != node_id  # a new id: the old one could not be read
