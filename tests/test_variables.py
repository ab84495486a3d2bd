"""Shared variables (``corral var ...``) through a real master's control socket: what a
user sees (output, exit status, one-line errors), and the store surviving a restart."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.harness import PATIENCE, ROOT, MasterProcess, python_env, wait_until


def corral(control: Path, *words: str, **popen: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "master.front.cli", "--control",
                           str(control), *words], capture_output=True, text=True,
                          env=python_env(), cwd=ROOT, timeout=PATIENCE * 2, **popen)


def corral_running(control: Path, *words: str) -> subprocess.Popen[str]:
    """``corral WORDS`` started, its output to read as it comes."""
    return subprocess.Popen([sys.executable, "-m", "master.front.cli", "--control",
                             str(control), *words], stdout=subprocess.PIPE, text=True,
                            env=python_env(), cwd=ROOT)


def control_of(master: MasterProcess) -> Path:
    return master.base / "master-state" / "control.sock"


@pytest.fixture
def control(spawn_master) -> Path:  # type: ignore[no-untyped-def]
    return control_of(spawn_master(extra=["--no-console"]))


@pytest.mark.slow
def test_set_get_list_del(control: Path) -> None:
    assert corral(control, "var", "set", "greeting", "hello world").returncode == 0
    got = corral(control, "var", "get", "greeting")
    assert (got.returncode, got.stdout, got.stderr) == (0, "hello world\n", "")
    assert corral(control, "var", "set", "group/a", "1").returncode == 0
    listed = corral(control, "var", "list", "group/")
    assert "group/a" in listed.stdout and "greeting" not in listed.stdout
    document = json.loads(corral(control, "--json", "var", "get", "greeting").stdout)
    assert document["result"]["value"] == "hello world"
    assert document["result"]["set_by"] == "operator"
    assert document["result"]["version"] == 1
    assert corral(control, "var", "del", "greeting").returncode == 0
    gone = corral(control, "var", "del", "greeting")
    assert (gone.returncode, gone.stderr) == (1, "error: no variable greeting\n")


def test_unknown_variable(control: Path) -> None:
    done = corral(control, "var", "get", "nothing_here")
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == "corral: error: no variable nothing_here\n"


@pytest.mark.slow
def test_bad_names_and_oversize_value(control: Path) -> None:
    for bad in ("-x", "a b", "x" * 129, "über", "a;b", ".hidden"):
        done = corral(control, "var", "set", "--", bad, "v")
        assert done.returncode == 2, bad
        assert "bad name" in done.stderr.splitlines()[-1], bad
    big = corral(control, "var", "set", "big", "x" * (64 * 1024 + 1))
    assert big.returncode == 2
    assert "65,537 bytes; at most 65,536 (64 KiB)" in big.stderr.splitlines()[-1]
    exact = corral(control, "var", "set", "big", "é" * (32 * 1024))
    assert exact.returncode == 0
    assert corral(control, "var", "get", "big").stdout == "é" * (32 * 1024) + "\n"


def test_the_master_refuses_what_the_cli_would(control: Path) -> None:
    """A caller that skips the CLI's checks gets the master's."""
    from common.errors import CorralError, ErrorCode
    from master.front.control import SocketBackend

    backend = SocketBackend(control)
    with pytest.raises(CorralError) as raised:
        backend.call("var_set", {"name": "../x", "value": "v"})
    assert raised.value.code is ErrorCode.BAD_REQUEST and "bad name" in raised.value.message
    with pytest.raises(CorralError) as raised:
        backend.call("var_set", {"name": "x", "value": 42})
    assert raised.value.message == "var_set: value must be text, not int"
    with pytest.raises(CorralError) as raised:
        backend.call("var_set", {"name": "x", "value": "v" * 70_000})
    assert "at most 65,536" in raised.value.message
    with pytest.raises(CorralError) as raised:
        backend.call("var_set", {"name": "x"})
    assert (raised.value.code, raised.value.message) == (
        ErrorCode.BAD_REQUEST, "var_set: argument 'value' is missing")


@pytest.mark.slow
def test_store_survives_a_master_restart(spawn_master) -> None:  # type: ignore[no-untyped-def]
    master = spawn_master(extra=["--no-console"])
    control = control_of(master)
    assert corral(control, "var", "set", "kept", "line one\nline two").returncode == 0
    assert corral(control, "var", "set", "dropped", "x").returncode == 0
    assert corral(control, "var", "del", "dropped").returncode == 0
    stored = master.base / "master-state" / "variables.json"
    assert json.loads(stored.read_text())["variables"][0]["name"] == "kept"
    master.stop()  # SIGKILL: nothing is saved on the way out
    again = spawn_master(extra=["--no-console"])
    got = corral(control_of(again), "var", "get", "kept")
    assert (got.returncode, got.stdout) == (0, "line one\nline two\n")
    assert corral(control_of(again), "var", "get", "dropped").returncode == 1


@pytest.mark.slow
def test_unreadable_store_is_set_aside(spawn_master, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    state = tmp_path / "master-state"
    state.mkdir(mode=0o700)
    (state / "variables.json").write_text("{not json")
    control = control_of(spawn_master(extra=["--no-console"]))
    assert corral(control, "var", "list").stdout.strip() == "no variables"
    assert (state / "variables.json.corrupt").exists()
    assert corral(control, "var", "set", "a", "b").returncode == 0


@pytest.mark.slow
def test_get_wait_until_set(control: Path) -> None:
    waiter = corral_running(control, "var", "get", "later", "--wait")
    try:
        # Set it only once the waiter is connected and waiting.
        wait_until(lambda: psutil.Process(waiter.pid).net_connections(kind="unix"))
        assert waiter.poll() is None
        assert corral(control, "var", "set", "later", "now").returncode == 0
        out, _ = waiter.communicate(timeout=PATIENCE)
        assert (waiter.returncode, out) == (0, "now\n")
    finally:
        waiter.kill()
        waiter.wait()
    timed = corral(control, "var", "get", "never", "--wait", "--timeout", "0.2")
    assert timed.returncode == 1
    assert timed.stderr == "corral: error: no variable never after waiting 0.2 s\n"


@pytest.mark.slow
def test_cas_has_exactly_one_winner_among_20_writers(control: Path) -> None:
    """Twenty processes race to take a lock held by no one: one swaps, nineteen are told
    who holds it."""
    racers = [subprocess.Popen([sys.executable, "-m", "master.front.cli", "--control",
                                str(control), "var", "cas", "--absent", "lock", f"racer{i}"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=python_env(), cwd=ROOT) for i in range(20)]
    outcomes = [(racer.wait(PATIENCE), racer.communicate()[1]) for racer in racers]
    winners = [i for i, (status, _err) in enumerate(outcomes) if status == 0]
    assert len(winners) == 1
    holder = f"racer{winners[0]}"
    assert corral(control, "var", "get", "lock").stdout == f"{holder}\n"
    for i, (status, err) in enumerate(outcomes):
        if i != winners[0]:
            assert status == 1
            assert err == f"not swapped: lock: it holds '{holder}' (set by operator)\n"
    # The holder hands it on with OLD: a stale OLD is refused.
    assert corral(control, "var", "cas", "lock", "someone else", "x").returncode == 1
    assert corral(control, "var", "cas", "lock", holder, "next").returncode == 0
    absent = corral(control, "var", "cas", "nolock", "x", "y")
    assert (absent.returncode, absent.stderr) == (1, "not swapped: nolock: it does not "
                                                     "exist\n")
    assert corral(control, "var", "cas", "--absent", "lock", "x").returncode == 1
    usage = corral(control, "var", "cas", "lock", "only-one")
    assert usage.returncode == 2
    assert "var cas NAME OLD NEW, or var cas --absent NAME NEW" in usage.stderr


@pytest.mark.slow
def test_watch_prints_each_change(control: Path) -> None:
    watcher = corral_running(control, "var", "watch", "w")
    try:
        assert watcher.stdout is not None
        assert watcher.stdout.readline() == "w (absent)\n"
        corral(control, "var", "set", "w", "one")
        assert watcher.stdout.readline() == "w=one\n"
        corral(control, "var", "set", "w", "two\nlines")
        assert watcher.stdout.readline() == "w=two\n"
        assert watcher.stdout.readline() == "lines\n"
        corral(control, "var", "del", "w")
        assert watcher.stdout.readline() == "w (absent)\n"
        watcher.send_signal(signal.SIGINT)
        assert watcher.wait(PATIENCE) == 0
    finally:
        watcher.kill()
        watcher.wait()


@pytest.mark.slow
def test_watch_json_prints_each_change_as_a_document(control: Path) -> None:
    watcher = corral_running(control, "--json", "var", "watch", "w")
    try:
        assert watcher.stdout is not None
        assert json.loads(watcher.stdout.readline()) == {"name": "w", "entry": None}
        corral(control, "var", "set", "w", "two\nlines")
        change = json.loads(watcher.stdout.readline())
        assert change["name"] == "w" and change["entry"]["value"] == "two\nlines"
        assert (change["entry"]["set_by"], change["entry"]["version"]) == ("operator", 1)
        corral(control, "var", "del", "w")
        assert json.loads(watcher.stdout.readline()) == {"name": "w", "entry": None}
        watcher.send_signal(signal.SIGINT)
        assert watcher.wait(PATIENCE) == 0
        assert json.loads(watcher.stdout.read()) == {
            "command": "var", "ok": True, "result": {"name": "w", "changes": 3}}
    finally:
        watcher.kill()
        watcher.wait()


@pytest.mark.slow
def test_console_var_commands(master) -> None:  # type: ignore[no-untyped-def]
    """The master's own console: the same definitions, in-process."""
    from master.console import CorralConsole
    from master.local import LocalBackend

    console = CorralConsole(LocalBackend(master), interactive=False, stdout=io.StringIO())
    console.onecmd_plus_hooks("var set k 'v 1'")
    console.onecmd_plus_hooks("var get k")
    assert console.last_result.value == "v 1"
    assert console.last_result.set_by == "operator"
    console.exit_code = 0
    console.onecmd_plus_hooks("var cas k wrong x")
    assert console.exit_code == 1 and not console.last_result.swapped
    console.onecmd_plus_hooks("var list")
    assert [entry.name for entry in console.last_result] == ["k"]


@pytest.mark.slow
def test_a_store_that_cannot_be_saved_says_so(spawn_master, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    control = control_of(spawn_master(extra=["--no-console"]))
    blocker = tmp_path / "master-state" / ".variables.json.tmp"
    blocker.mkdir()  # where the store is written first: now it cannot be
    done = corral(control, "var", "set", "a", "1")
    assert done.returncode == 1
    assert done.stderr.startswith("corral: error: changed in the master's memory, but not "
                                  f"saved to {tmp_path / 'master-state' / 'variables.json'}")
    assert done.stderr.endswith("(lost if the master restarts)\n")
    assert corral(control, "var", "get", "a").stdout == "1\n"
    blocker.rmdir()
    assert corral(control, "var", "set", "b", "2").returncode == 0
    saved = json.loads((tmp_path / "master-state" / "variables.json").read_text())
    assert sorted(entry["name"] for entry in saved["variables"]) == ["a", "b"]
