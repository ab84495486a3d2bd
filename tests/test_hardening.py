"""A peer holding the token, a crafted node name or a bent reply gets no further than its
own connection: names, paths, escapes, typed replies, bounded state, private leftovers."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from client.protocol import Identity, handshake
from common.errors import RemoteError
from common.framing import FrameChannel
from common.landing import TEMP_PREFIX
from common.messages import GetRequest, ListRequest, SignalRequest
from common.procs import ProcExited, ProcInfo
from common.states import NodeState
from master.api import MasterAPI
from tests.conftest import TOKEN
from tests.harness import PATIENCE, ROOT, ClientProcess, python_env, wait_until
from tests.peers import Frames, ScriptedNode, good_heartbeat

BAD_NAMES = ["..", ".", "../esc", "/some/abs/dir", "a" * 65, "tab\there", "esc\x1b[2J",
             "caf\u00e9", "sp ace", ""]


@pytest.fixture
def n1(master: MasterAPI, spawn_client) -> ClientProcess:
    client = spawn_client("n1", master.address)
    assert master.wait_ready(1, timeout=PATIENCE).reached
    return client


def scripted(master: MasterAPI, name: str, answer=None) -> ScriptedNode:  # type: ignore[no-untyped-def]
    node = ScriptedNode(master.address, name, TOKEN.encode(), answer).start()
    wait_until(lambda: any(n.name == name and n.state is NodeState.READY
                           for n in master.nodes()), what=f"{name} READY")
    return node


# --- 1. names, paths, modes, escapes -----------------------------------------------------------


@pytest.mark.parametrize("name", BAD_NAMES)
def test_client_refuses_a_bad_name_of_its_own(name: str, token_file: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "client", "--master", "127.0.0.1:9", "--name", name,
         "--token-file", str(token_file)],
        capture_output=True, text=True, env=python_env(), cwd=ROOT, timeout=PATIENCE)
    assert done.returncode == 2
    assert "a node name is 1 to 64 characters of letters, digits" in done.stderr
    assert "\x1b" not in done.stderr


@pytest.mark.parametrize("name", ["..", "../esc", "/some/abs/dir", "esc\x1b[2J", "a" * 65])
def test_master_refuses_a_bad_name_from_a_peer_holding_the_token(
        master: MasterAPI, master_log: Path, name: str) -> None:
    import socket

    sock = socket.create_connection(master.address, timeout=PATIENCE)
    with pytest.raises(RemoteError) as refused:
        handshake(FrameChannel(sock), Identity("f" * 32, name, "test"), TOKEN.encode())
    sock.close()
    assert "a node name is 1 to 64 characters" in refused.value.message
    assert master.nodes() == []
    wait_until(lambda: "bad node name" in master_log.read_text(), what="refusal logged")
    assert "\x1b" not in master_log.read_text()


def file_frames(relpath: str, data: bytes, mode: int = 0o644) -> list[dict]:
    return [{"t": "getf", "relpath": relpath, "kind": "file", "mode": mode, "size": len(data)},
            {"t": "getc", "data": data},
            {"t": "gete"}]


def pulling(frames: list[dict]):  # type: ignore[no-untyped-def]
    def answer(request):  # type: ignore[no-untyped-def]
        if isinstance(request, GetRequest):
            return Frames([*frames, {"t": "reply", "value": {"files": 1, "bytes": 3}}])
        return None
    return answer


@pytest.mark.parametrize("relpath", ["../escaped", "../../escaped", "/tmp/corral-abs-escape",
                                     "a/../../escaped", "link/escaped", "ok/../../../escaped"])
def test_pull_writes_only_inside_local_dir(master: MasterAPI, n1: ClientProcess,
                                           tmp_path: Path, relpath: str) -> None:
    out = tmp_path / "out"
    outside = tmp_path / "outside"
    outside.mkdir()
    (out / "evil").mkdir(parents=True)
    (out / "evil" / "link").symlink_to(outside)  # a link already there must not be followed
    (n1.workdir / "x").write_text("fine\n")
    scripted(master, "evil", pulling(file_frames(relpath, b"bad")))
    group = master.pull(None, ["x"], str(out))
    assert "unsafe path" in group.errors["evil"].message
    assert (out / "n1" / "x").read_text() == "fine\n"  # the honest node is unaffected
    assert not (tmp_path / "escaped").exists() and not (out / "escaped").exists()
    assert list(outside.iterdir()) == []
    assert not Path("/tmp/corral-abs-escape").exists()


def test_setuid_bits_never_land(master: MasterAPI, n1: ClientProcess, tmp_path: Path) -> None:
    source = tmp_path / "tool"
    source.write_bytes(b"#!/bin/sh\n")
    source.chmod(0o6755)
    assert master.copy("n1", [str(source)], "tool").ok
    assert stat.S_IMODE((n1.workdir / "tool").stat().st_mode) == 0o755
    scripted(master, "evil", pulling(file_frames("planted", b"abc", mode=0o7777)))
    group = master.pull("evil", ["planted"], str(tmp_path / "out"))
    assert group.ok, group.errors
    assert stat.S_IMODE((tmp_path / "out" / "evil" / "planted").stat().st_mode) == 0o777


@pytest.mark.slow
def test_control_characters_from_peers_are_escaped(spawn_master, spawn_client) -> None:
    master = spawn_master(["list --wait 1 --timeout 30",
                           "run -w n1 -- echo a\x1b[2Jb\x07c",
                           "exec -w n1 -- no\x1b]0:title\x07such", "quit"])
    spawn_client("n1", master.address)
    out, err = master.proc.communicate(timeout=PATIENCE * 2)
    assert "a\\x1b[2Jb\\x07c" in out
    assert "no\\x1b]0:title\\x07such" in out + err
    assert "\x1b" not in out + err and "\x07" not in out + err
    assert "\x1b" not in master.log_text()


# --- 3. every reply is checked like a request --------------------------------------------------


def proc_wire(**changes: object) -> dict:
    info = ProcInfo(seq=1, pid=4242, argv=["sleep", "9"], cwd="/", log="/l", state="running",
                    started=1.0).to_wire()
    return {**info, **changes}


@pytest.mark.parametrize("reply", [
    [proc_wire(state="bogus")],
    [proc_wire(rusage={"ru_utime": 1.0})],
    [proc_wire(pid="4242")],
    [{"t": "signal-answer", "pid": 1, "ok": True}],
    {"not": "a list"},
    [proc_wire(started=float("nan"))],
])
def test_a_bad_reply_is_that_nodes_protocol_error(master: MasterAPI, n1: ClientProcess,
                                                  reply: object) -> None:
    evil = scripted(master, "evil", lambda request: reply
                    if isinstance(request, ListRequest) else None)
    group = master.processes(None)
    assert group.succeeded == ["n1"]
    assert group.errors["evil"].message.startswith("protocol error")
    evil.closed.wait(PATIENCE)
    assert evil.closed.is_set()  # its connection is closed
    assert master.processes(None).succeeded == ["n1"]


def test_a_signal_reply_of_the_wrong_shape_does_not_break_kill(master: MasterAPI,
                                                                n1: ClientProcess) -> None:
    scripted(master, "evil", lambda request: [{"pid": request.pids[0], "ok": True,
                                               "code": 0, "message": 7}]
             if isinstance(request, SignalRequest) else None)
    ref = f"n1:{master.exec('n1', ['sleep', '30']).results['n1'][0].pid}"
    outcomes = {o.ref: o for o in master.signal([ref, "evil:77"], signal.SIGKILL)}
    assert outcomes[ref].ok
    assert not outcomes["evil:77"].ok and "protocol error" in outcomes["evil:77"].message


@pytest.mark.parametrize("load", [[], [1.0], [1.0, 2.0, 3.0, 4.0], [1.0, -1.0, 0.0]])
def test_a_bad_heartbeat_costs_only_its_connection(master: MasterAPI, n1: ClientProcess,
                                                   load: list[float]) -> None:
    evil = scripted(master, "evil")
    evil.send_wire({**good_heartbeat(99), "load": load})
    evil.closed.wait(PATIENCE)
    assert evil.closed.is_set()
    wait_until(lambda: {n.name: n.state for n in master.nodes()}.get("evil") is NodeState.GONE)
    views = {n.name: n for n in master.nodes()}
    assert views["n1"].state is NodeState.READY and views["n1"].load is not None
    assert views["evil"].load is not None and len(views["evil"].load) == 3


# --- 4. bounded state against a peer with the token --------------------------------------------


def test_exit_events_under_made_up_boot_ids_are_dropped_and_logged_once(
        master: MasterAPI, master_log: Path) -> None:
    evil = scripted(master, "evil", lambda request: [])
    seen: list[object] = []
    master.subscribe(seen.append)
    info = ProcInfo(seq=1, pid=7, argv=["x"], cwd="/", log="/l", state="exited",
                    started=1.0, ended=2.0, exit_code=0)
    for number in range(500):
        evil.send(ProcExited(boot=f"boot{number}", eseq=1, procs=[info]))
    # Its answer comes after every event on the same connection: all have been read.
    assert master.processes("evil").results["evil"] == []
    evil.stop()
    wait_until(lambda: "times in all" in master_log.read_text(), what="summary at close")
    text = master_log.read_text()
    assert text.count("another boot id") == 2  # the first one, then the count at close
    assert "499 times in all" in text
    assert sum(1 for event in seen if getattr(event, "info", None) is not None) == 1


# --- 5. nothing secret or half-written is left lying on a node ---------------------------------


def test_stdin_bytes_are_private_and_gone_once_read(master: MasterAPI, n1: ClientProcess,
                                                    tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"hunter2\n")
    info = master.exec("n1", ["cat"], stdin=secret.read_bytes()).results["n1"][0]
    ref = f"n1:{info.pid}"
    master.wait([ref], timeout=PATIENCE)
    assert master.log(ref).data == b"hunter2\n"
    stdin_dir = n1.state_dir / "stdin"
    assert stat.S_IMODE(stdin_dir.stat().st_mode) == 0o700
    assert list(stdin_dir.iterdir()) == []


def test_a_killed_client_removes_its_partial_files_when_it_starts(
        master: MasterAPI, spawn_client, tmp_path: Path) -> None:
    victim = spawn_client("victim", master.address)
    assert master.wait_ready(1, timeout=PATIENCE).reached
    source = tmp_path / "big.bin"
    with open(source, "wb") as out:
        out.write(os.urandom(1024 * 1024) * 96)
    partials: list[Path] = []

    def kill_once_a_partial_exists(_progress: object) -> None:
        # Called on the master's hub thread: while it waits here nothing more is sent, so
        # the copy cannot finish before the client is killed with its partial file.
        if victim.proc.poll() is None:
            partials.extend(wait_until(lambda: list(victim.workdir.glob(TEMP_PREFIX + "*")),
                                       what="the partial file"))
            victim.signal(signal.SIGKILL)
            victim.proc.wait()

    group = master.copy("victim", [str(source)], "big.bin", progress=kill_once_a_partial_exists)
    assert group.failed == ["victim"]
    victim.proc.wait()
    assert partials and all(p.exists() for p in partials)  # what a SIGKILL leaves
    victim.start()
    wait_until(lambda: not any(p.exists() for p in partials), what="partials removed")
    assert list(victim.workdir.glob(TEMP_PREFIX + "*")) == []
    assert not (victim.workdir / "big.bin").exists()


@pytest.mark.slow
def test_a_killed_master_removes_its_partial_pulls_when_it_starts(
        spawn_master, spawn_client, tmp_path: Path) -> None:
    out = tmp_path / "pulled"
    master = spawn_master(["list --wait 1 --timeout 30", f"pull -w n1 big.bin {out}", "quit"])
    workdir = tmp_path / "n1" / "work"  # where the client will serve from
    workdir.mkdir(parents=True)
    with open(workdir / "big.bin", "wb") as big:
        big.write(os.urandom(1024 * 1024) * 512)
    spawn_client("n1", master.address)
    partials = wait_until(lambda: list((out / "n1").glob(TEMP_PREFIX + "*")),
                          what="a pull in progress")
    master.proc.kill()
    master.proc.wait()
    assert all(p.exists() for p in partials)
    again = spawn_master(["quit"])
    again.proc.communicate(timeout=PATIENCE)
    assert not any(p.exists() for p in partials)


def test_client_warns_about_a_token_file_others_can_read(master: MasterAPI, spawn_client,
                                                        token_file: Path) -> None:
    token_file.chmod(0o644)
    client = spawn_client("n1", master.address)
    assert master.wait_ready(1, timeout=PATIENCE).reached
    assert "can be read by other users" in client.log_text()


# --- 7. a failed command always fails the batch, with one line ---------------------------------


def unreadable_file(tmp_path: Path) -> Path:
    path = tmp_path / "unreadable"
    path.write_text("x")
    path.chmod(0)
    try:
        path.read_bytes()
    except PermissionError:
        return path
    for candidate in ("/sys/bus/cpu/uevent", "/proc/sys/vm/compact_memory"):
        try:
            Path(candidate).read_bytes()
        except PermissionError:
            return Path(candidate)
        except OSError:
            continue
    pytest.skip("no file here that this user cannot read")


@pytest.mark.slow
def test_failures_are_one_line_and_fail_the_batch(spawn_master, spawn_client,
                                                  tmp_path: Path) -> None:
    source = unreadable_file(tmp_path)
    readable = tmp_path / "fine"
    readable.write_text("fine")
    master = spawn_master(["list --wait 1 --timeout 30",
                           f"copy -w n1 {readable} {source} dest/", "quit"])
    client = spawn_client("n1", master.address)
    _out, err = master.proc.communicate(timeout=PATIENCE * 2)
    assert master.proc.returncode == 1
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if "cannot read" in line] == [
        f"error: {source}: cannot read: Permission denied"]
    assert not (client.workdir / "dest").exists()  # nothing was created before the check

    master = spawn_master(["log n1:99999999999999999999", "quit"])
    _out, err = master.proc.communicate(timeout=PATIENCE)
    assert master.proc.returncode == 1
    assert err.strip().splitlines()[-1] == (
        "error: bad process reference 'n1:99999999999999999999': pid out of range")


def test_a_pull_cannot_send_more_than_it_announced(master: MasterAPI, n1: ClientProcess,
                                                   tmp_path: Path) -> None:
    frames = file_frames("big", b"x" * 4096)
    frames[0]["size"] = 10
    scripted(master, "evil", pulling(frames))
    group = master.pull("evil", ["big"], str(tmp_path / "out"))
    assert "more than the 10 bytes announced" in group.errors["evil"].message
    assert list((tmp_path / "out" / "evil").iterdir()) == []
