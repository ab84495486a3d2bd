"""The master as a service: headless until SIGTERM, its control socket, the ``corral`` CLI
(exit statuses, --json for every command) and consoles attached to it, through real
master, client and CLI processes."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import re
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pexpect
import psutil
import pytest

from common.errors import CorralError, ErrorCode
from master.front.control import SocketBackend
from tests.harness import (
    PATIENCE,
    ROOT,
    MasterProcess,
    peak_rss_kib,
    python_env,
    wait_until,
)


def control_of(master: MasterProcess) -> Path:
    return master.base / "master-state" / "control.sock"


def corral(control: Path, *words: str, **popen: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "master.front.cli", "--control",
                           str(control), *words], capture_output=True, text=True,
                          env=python_env(), cwd=ROOT, timeout=PATIENCE * 2, **popen)


@pytest.fixture
def service(spawn_master, spawn_client):  # type: ignore[no-untyped-def]
    """A headless master with clients n1 and n2, READY."""
    master = spawn_master(extra=["--no-console"])
    clients = [spawn_client(name, master.address) for name in ("n1", "n2")]
    done = corral(control_of(master), "list", "--wait", "2", "--timeout", "30")
    assert done.returncode == 0, done.stderr
    return master, clients


@pytest.mark.slow
def test_state_folder_and_socket_are_private(service) -> None:
    master, _clients = service
    control = control_of(master)
    assert stat.S_IMODE(control.parent.stat().st_mode) == 0o700
    assert stat.S_ISSOCK(control.stat().st_mode)
    assert stat.S_IMODE(control.stat().st_mode) == 0o600


@pytest.mark.slow
def test_every_exit_status(service, tmp_path: Path) -> None:
    master, _clients = service
    control = control_of(master)
    listed = corral(control, "list")
    assert listed.returncode == 0 and listed.stdout.count("READY") == 2
    failed = corral(control, "run", "-w", "n1", "--", "exit", "3")
    assert failed.returncode == 1
    assert "[n1] exit 3" in failed.stdout and "0 succeeded, 1 failed" in failed.stdout
    spawn_error = corral(control, "exec", "-w", "n2", "--", "no-such-program-here")
    assert spawn_error.returncode == 1 and "n2: no-such-program-here: error" in spawn_error.stderr
    for usage in (["lsit"], ["kill"], ["pid", "--state", "sideways"], ["exec", "-w", "n[1-"]):
        done = corral(control, *usage)
        assert done.returncode == 2, (usage, done.stderr)
        assert done.stderr.strip(), usage
    nowhere = corral(tmp_path / "none.sock", "list")
    assert nowhere.returncode == 3
    assert nowhere.stderr.count("\n") == 1
    assert str(tmp_path / "none.sock") in nowhere.stderr
    assert "corral-master --no-console" in nowhere.stderr


@pytest.mark.slow
def test_json_for_every_command(service, tmp_path: Path) -> None:
    master, _clients = service
    control = control_of(master)
    (tmp_path / "data.txt").write_text("payload\n")

    def document(*words: str, status: int = 0) -> dict[str, Any]:
        done = corral(control, "--json", *words)
        assert done.returncode == status, (words, done.stderr)
        lines = done.stdout.splitlines()
        parsed = [json.loads(line) for line in lines]
        assert parsed[-1]["command"] == words[0]
        assert parsed[-1]["ok"] is (status == 0)
        return parsed[-1] | {"lines": parsed[:-1]}

    assert {n["name"] for n in document("list")["result"]} == {"n1", "n2"}
    assert len(document("list", "--wait", "2")["result"]) == 2
    ran = document("run", "--", "echo", "hello")["result"]
    assert ran["results"]["n1"]["stdout"] == "hello\n" and ran["order"] == ["n1", "n2"]
    started = document("exec", "-w", "n1", "--", "sh", "-c", "echo out; sleep 60")["result"]
    pid = started["results"]["n1"][0]["pid"]
    ref = f"n1:{pid}"
    assert document("pid", "-w", "n1", "--state", "running")["result"]["results"]["n1"]
    wait_until(lambda: "out" in corral(control, "log", ref).stdout, what="the log")
    logged = document("log", ref)
    assert logged["lines"][0]["data"] == "out\n" and logged["result"]["ref"] == ref
    saved = document("log", ref, "--save", str(tmp_path / "saved.log"))["result"]
    assert saved["bytes"] == 4 and (tmp_path / "saved.log").read_text() == "out\n"
    assert document("forget", "n2", status=1)["result"] == {"forgotten": []}  # not GONE
    assert document("getrusage", "-w", "n1")["result"]["results"]["n1"]["children"]
    assert document("kill", "-s", "STOP", ref)["result"][0]["ok"]
    assert document("kill", ref)["result"][0]["message"]
    waited = document("wait", ref, status=1)["result"][0]
    assert waited["info"]["state"] == "killed"
    followed = document("log", "-f", ref)
    assert followed["lines"][-1]["ended"] is True
    assert document("forget", ref)["result"][0]["ok"]
    short = document("exec", "-w", "n2", "--", "sleep", "60")["result"]["results"]["n2"][0]
    assert document("sKill", f"n2:{short['pid']}")["result"][0]["ok"]
    assert document("forget", "--all-ended")["result"]["order"] == ["n1", "n2"]
    everything = document("kill", "--all")["result"]
    assert everything["order"] == ["n1", "n2"] and everything["errors"] == {}
    copied = document("copy", str(tmp_path / "data.txt"), "data.txt")["result"]
    assert copied["results"]["n1"]["files"] == 1
    pulled = document("pull", "-w", "n2", "data.txt", str(tmp_path / "back"))["result"]
    assert pulled["results"]["n2"]["bytes"] == len("payload\n")
    assert (tmp_path / "back" / "n2" / "data.txt").read_text() == "payload\n"
    removed = document("remove", "data.txt")["result"]
    assert all(o["ok"] for outcomes in removed["results"].values() for o in outcomes)
    refused = document("remove", "-w", "n1", "no-such-file", status=1)["result"]
    assert refused["results"]["n1"][0]["ok"] is False


def as_nobody(control: Path) -> str:
    """What a process of user nobody is told when it calls the master at ``control``
    (forked, not exec'd: nobody may not be able to run this Python)."""
    nobody = pwd.getpwnam("nobody")
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: become nobody, call, report
        try:
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            try:
                SocketBackend(control).call("nodes", {})
                answer = "answered"
            except CorralError as exc:
                answer = f"{type(exc).__name__}: {exc.message}"
            os.write(writer, answer.encode())
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        answer = pipe.read().decode()
    os.waitpid(pid, 0)
    return answer


@pytest.mark.slow
def test_a_cli_that_reads_slowly_does_not_pile_the_log_up_in_the_master(service) -> None:
    """``corral log -f`` behind a fast writer, its output not read until the writer has
    ended: the master fetches the log only as fast as the CLI takes it (memory flat), and
    then every byte arrives, in order."""
    master, _clients = service
    control = control_of(master)
    started = corral(control, "--json", "exec", "-w", "n1", "--", "seq", "1", "9000000")
    (info,) = json.loads(started.stdout.splitlines()[-1])["result"]["results"]["n1"]
    ref, log_path = f"n1:{info['pid']}", Path(info["log"])  # about 69 MB
    assert master.proc is not None
    master_before = peak_rss_kib(master.proc.pid)
    follow = subprocess.Popen([sys.executable, "-m", "master.front.cli", "--control",
                               str(control), "log", ref, "-n", "0", "-f"],
                              stdout=subprocess.PIPE, env=python_env(), cwd=ROOT)
    try:
        assert corral(control, "wait", ref).returncode == 0  # the writer has ended
        shown, _ = follow.communicate(timeout=PATIENCE * 4)
    finally:
        follow.kill()
        follow.wait()
    assert follow.returncode == 0
    assert hashlib.sha256(shown).hexdigest() == hashlib.sha256(log_path.read_bytes()).hexdigest()
    assert peak_rss_kib(master.proc.pid) - master_before < 32 * 1024


@pytest.mark.slow
@pytest.mark.skipif(os.getuid() != 0, reason="needs root to become nobody")
def test_a_process_of_another_user_is_refused(service) -> None:
    master, _clients = service
    # The 0700 folder keeps nobody from reaching the socket at all...
    blocked = as_nobody(control_of(master))
    assert blocked.startswith("NoMaster: no master at") and "Permission denied" in blocked
    # ...and a socket put where anyone could reach it still serves only its user.
    open_dir = Path(tempfile.mkdtemp(prefix="corral-open-"))
    try:
        open_dir.chmod(0o755)
        exposed = open_dir / "control.sock"
        second = MasterProcess(master.base / "second", master.token_file,
                               extra=["--no-console", "--control", str(exposed)]).start()
        try:
            exposed.chmod(0o666)
            nobody_uid = pwd.getpwnam("nobody").pw_uid
            assert as_nobody(exposed) == (
                f"NoMaster: refused: the master at {exposed} serves uid 0 and root, "
                f"not uid {nobody_uid}")
            assert corral(exposed, "list").returncode == 0  # its own user still gets in
        finally:
            second.stop()
    finally:
        for leftover in open_dir.iterdir():
            leftover.unlink()
        open_dir.rmdir()


@pytest.mark.slow
def test_master_killed_during_a_call(service) -> None:
    master, clients = service
    control = control_of(master)

    def running_it(client: Any) -> bool:
        for child in psutil.Process(client.pid).children(recursive=True):
            try:
                if "sleep 30" in " ".join(child.cmdline()):
                    return True
            except psutil.NoSuchProcess:  # ended while we looked
                continue
        return False

    call = subprocess.Popen([sys.executable, "-m", "master.front.cli", "--control",
                             str(control), "run", "--", "sleep 30"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=python_env(), cwd=ROOT)
    try:
        wait_until(lambda: all(running_it(client) for client in clients),
                   what="the command to run on both nodes")
        master.proc.send_signal(signal.SIGKILL)
        _out, err = call.communicate(timeout=PATIENCE)
    finally:
        if call.poll() is None:
            call.kill()
            call.wait()
    assert call.returncode == 3
    assert err.count("\n") == 1 and "went away during the call" in err
    # Nothing is left half-done: each client stops the run it was serving for the master.
    wait_until(lambda: not any(running_it(client) for client in clients),
               what="the clients to stop the command")


@pytest.mark.slow
def test_sigterm_keeps_processes_and_the_next_master_hears_their_ends(
        spawn_master, spawn_client) -> None:
    first = spawn_master(extra=["--no-console"])
    client = spawn_client("n1", first.address)
    control = control_of(first)
    assert corral(control, "list", "--wait", "1", "--timeout", "30").returncode == 0
    started = json.loads(corral(control, "--json", "exec", "--", "sleep", "60").stdout)
    pid = started["result"]["results"]["n1"][0]["pid"]
    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(timeout=PATIENCE) == 0
    assert "stopping on SIGTERM" in first.log_text()
    assert not control.exists()
    os.kill(pid, 0)  # still running with its master gone
    os.kill(pid, signal.SIGTERM)  # it ends while no master listens
    wait_until(lambda: not Path(f"/proc/{pid}").exists(), what="the client to reap it")
    second = spawn_master(port=first.port, extra=["--no-console"])
    wait_until(lambda: f"process n1:{pid}" in second.log_text(), what="the exit event")
    assert f"process n1:{pid} (sleep 60) killed SIGTERM" in second.log_text()
    assert client.proc is not None and client.proc.poll() is None


@pytest.mark.slow
def test_a_console_attached_beside_the_cli_sees_notices(service) -> None:
    master, _clients = service
    control = control_of(master)
    child = pexpect.spawn(sys.executable, ["-m", "master.front.cli", "--control",
                                           str(control), "console"],
                          env=python_env(), cwd=str(ROOT), encoding="utf-8",
                          timeout=PATIENCE, dimensions=(40, 200))
    try:
        child.expect("corral>")
        child.sendline("list")
        child.expect(r"n2\s+\w{8}\s+127")
        done = corral(control, "exec", "-w", "n1", "--", "sh", "-c", "exit 4")
        assert done.returncode == 0, done.stderr
        child.expect(r"process n1:\d+ \(sh -c exit 4\) exited 4")
        second = corral(control, "run", "-w", "n2", "--", "echo", "beside")
        assert second.returncode == 0 and "beside" in second.stdout
        child.sendline("quit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert corral(control, "list").returncode == 0  # leaving the console leaves the master


@pytest.mark.slow
def test_ctrl_c_in_the_cli_cancels_run_on_the_nodes(service) -> None:
    master, _clients = service
    control = control_of(master)
    call = subprocess.Popen([sys.executable, "-m", "master.front.cli", "--control",
                             str(control), "run", "-w", "n1", "--", "sleep 30"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=python_env(), cwd=ROOT)
    try:
        wait_until(lambda: "sleep 30" in corral(control, "pid", "--state", "running").stdout,
                   what="the command to run on n1")
        call.send_signal(signal.SIGINT)
        out, err = call.communicate(timeout=PATIENCE)
    finally:
        if call.poll() is None:
            call.kill()
            call.wait()
    assert call.returncode == 1, err
    assert "[n1] cancelled" in out and "0 succeeded, 1 failed" in out
    assert "sleep 30" not in corral(control, "pid", "--state", "running").stdout


def test_cli_doc_has_a_parseable_example_for_every_command() -> None:
    text = (ROOT / "docs" / "cli.md").read_text()
    blocks = re.findall(r"```json\n(.*?)```", text, re.S)
    commands = set()
    for block in blocks:
        for line in block.splitlines():
            document = json.loads(line)
            commands.add(document.get("command", "log"))
    from master.front.commands import COMMANDS
    assert commands == set(COMMANDS)


@pytest.mark.slow
def test_a_second_master_on_the_same_socket_refuses_to_start(service, spawn_master) -> None:
    master, _clients = service
    second = subprocess.run(MasterProcess(master.base, master.token_file).argv(
        ["--no-console"]), capture_output=True, text=True, env=python_env(), cwd=ROOT,
        timeout=PATIENCE)
    assert second.returncode == 2
    assert f"another master already answers on {control_of(master)}" in second.stderr
    assert corral(control_of(master), "list").returncode == 0  # the first one serves on


@pytest.mark.slow
def test_a_call_with_bad_arguments_is_a_usage_error(service) -> None:
    master, _clients = service
    with pytest.raises(CorralError) as caught:
        SocketBackend(control_of(master)).call("exec", {"nodeset": None})
    assert caught.value.code == ErrorCode.BAD_REQUEST
    assert caught.value.message == "exec: argument 'argv' is missing"
    assert corral(control_of(master), "list").returncode == 0


@pytest.mark.slow
def test_master_start_refusals(tmp_path: Path, token_file: Path) -> None:
    def start(*words: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "master", "--port", "0", "--token-file",
                               str(token_file), "--log-dir", str(tmp_path / "logs"), *words],
                              capture_output=True, text=True, env=python_env(), cwd=ROOT,
                              stdin=subprocess.DEVNULL, timeout=PATIENCE)

    open_dir = tmp_path / "open"
    open_dir.mkdir(mode=0o755)
    open_dir.chmod(0o755)
    refused = start("--no-console", "--state-dir", str(open_dir))
    assert refused.returncode == 2
    assert f"state folder {open_dir} is open to other users (mode 755)" in refused.stderr
    assert stat.S_IMODE(open_dir.stat().st_mode) == 0o755  # left as it was
    with_commands = start("--no-console", "--state-dir", str(tmp_path / "s"), "list")
    assert with_commands.returncode == 2 and "commands need the console" in with_commands.stderr
    idle = start("--state-dir", str(tmp_path / "s"))  # no terminal, nothing to do
    assert idle.returncode == 2
    assert "no terminal and no commands" in idle.stderr and "--no-console" in idle.stderr


def test_a_word_that_is_not_utf8_is_one_clear_line(tmp_path: Path) -> None:
    called = subprocess.run([sys.executable.encode(), b"-m", b"master.front.cli", b"--control",
                             str(tmp_path / "none.sock").encode(), b"run", b"-w", b"n1",
                             b"--", b"echo \xff"],
                            capture_output=True, text=True, env=python_env(), cwd=ROOT,
                            timeout=PATIENCE)
    assert called.returncode == 2
    assert called.stderr == ("corral: error: 'echo \\udcff' is not UTF-8 text: corral sends "
                             "commands and paths as text\n")
