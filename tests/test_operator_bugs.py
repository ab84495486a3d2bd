"""What an operator deploying corral by its README ran into (issue 17's bugs), through real
master and client processes."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

from common.states import ProcState
from master.api import MasterAPI
from tests.harness import PATIENCE, ROOT, MasterProcess, python_env, wait_until
from tests.test_master_process import spawn_console


def run_client(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "client", *args], cwd=cwd,
                          capture_output=True, text=True, env=python_env(), timeout=PATIENCE)


@pytest.mark.slow
def test_relative_path_options_mean_the_folder_the_client_started_in(
        tmp_path: Path, token_file: Path) -> None:
    (tmp_path / "pki").mkdir()
    base = ["--master", "127.0.0.1:1", "--name", "n1", "--token-file", str(token_file),
            "--state-dir", "state"]
    result = run_client([*base, "--tls-cert", "pki/c.crt", "--tls-key", "pki/c.key",
                         "--tls-ca", "pki/ca.crt"], tmp_path)
    assert result.returncode == 2
    assert f"cannot read TLS certificate {tmp_path / 'pki' / 'c.crt'}: No such file" \
        in result.stderr
    (tmp_path / "pki" / "c.crt").write_text("not a certificate\n")
    (tmp_path / "pki" / "c.key").write_text("not a key\n")
    (tmp_path / "pki" / "ca.crt").write_text("not a CA\n")
    result = run_client([*base, "--tls-cert", "pki/c.crt", "--tls-key", "pki/c.key",
                         "--tls-ca", "pki/ca.crt"], tmp_path)
    assert result.returncode == 2
    assert f"cannot load TLS certificate {tmp_path / 'pki' / 'c.crt'} with key " \
        f"{tmp_path / 'pki' / 'c.key'}" in result.stderr
    result = run_client([*base, "--allow-file", "allowed.txt"], tmp_path)
    assert result.returncode == 2
    assert f"cannot read {tmp_path / 'allowed.txt'}: No such file" in result.stderr
    assert (tmp_path / "state" / "node-id").exists()  # the state folder is where typed


def test_relative_root_is_the_start_folder(master: MasterAPI, tmp_path: Path,
                                           token_file: Path) -> None:
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data.txt").write_text("reachable\n")
    client = subprocess.Popen(
        [sys.executable, "-m", "client", "--master", f"127.0.0.1:{master.address[1]}",
         "--name", "n1", "--token-file", str(token_file), "--state-dir", "state",
         "--workdir", "shared/work", "--root", "shared"],
        cwd=tmp_path, env=python_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert master.wait_ready(1, timeout=PATIENCE).reached
        group = master.pull("n1", ["../data.txt"], str(tmp_path / "pulled"))
        assert not group.errors, group.errors
        assert (tmp_path / "pulled" / "n1" / "data.txt").read_text() == "reachable\n"
    finally:
        client.terminate()
        client.wait(timeout=PATIENCE)


@pytest.mark.slow
def test_a_persons_quit_exits_0_after_failed_commands(tmp_path: Path, token_file: Path
                                                      ) -> None:
    child = spawn_console(MasterProcess(tmp_path, token_file, 0).argv([]))
    try:
        child.expect_exact("corral>")
        child.sendline("pid -w nosuch")
        child.expect("error")
        child.expect_exact("corral>")
        child.sendline("quit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=False)
    assert child.exitstatus == 0


def test_batch_keeps_its_status_rule(tmp_path: Path, token_file: Path) -> None:
    argv = MasterProcess(tmp_path, token_file, 0).argv(["pid -w nosuch", "quit"])
    result = subprocess.run(argv, capture_output=True, text=True, env=python_env(),
                            cwd=ROOT, timeout=PATIENCE, stdin=subprocess.DEVNULL)
    assert result.returncode == 1


@pytest.mark.slow
def test_a_client_waits_for_a_stopped_master_whose_host_answers(spawn_master,
                                                                spawn_client) -> None:
    # A dead link is noticed by silence with nothing acknowledged (test_multihost has it);
    # a stopped master's host still acknowledges, so the client waits rather than reconnects.
    master = spawn_master(extra=["--heartbeat", "0.2"])
    client = spawn_client("n1", master.address)
    wait_until(lambda: "registered with master" in client.log_text(), what="registered")
    assert master.proc is not None
    master.proc.send_signal(signal.SIGSTOP)
    try:
        wait_until(lambda: "but its host acknowledges what this client sends: the master is "
                   "busy or stopped; waiting for it" in client.log_text(), what="noticed")
    finally:
        master.proc.send_signal(signal.SIGCONT)
    wait_until(lambda: "READY" in master.log_text())
    assert "reconnecting" not in client.log_text()
    assert client.log_text().count("registered with master") == 1


@pytest.mark.slow
def test_a_request_to_a_silent_node_says_no_reply(master: MasterAPI, spawn_client) -> None:
    client = spawn_client("n1", master.address)
    assert master.wait_ready(1, timeout=PATIENCE).reached
    client.signal(signal.SIGSTOP)
    try:
        wait_until(lambda: master.nodes()[0].state.name == "MISSING", what="MISSING")
        group = master.processes("n1")  # the node goes GONE while this waits
    finally:
        client.signal(signal.SIGCONT)
    message = group.errors["n1"].message
    assert "no reply within" in message and "connection lost" not in message, message


@pytest.mark.slow
def test_spawn_failures_survive_a_client_restart(master: MasterAPI, spawn_client) -> None:
    client = spawn_client("n1", master.address)
    assert master.wait_ready(1, timeout=PATIENCE).reached
    (failed,) = master.exec("n1", ["no-such-program-here"]).results["n1"]
    assert failed.state == ProcState.SPAWN_FAILED.value
    client.stop()
    client.start()
    wait_until(lambda: master.nodes()[0].state.name == "READY" and client.log_text().count(
        "registered with master") >= 2, what="back")

    def failures() -> list[str]:
        return [p.describe() for p in master.processes("n1").results.get("n1", [])]

    assert wait_until(lambda: failures(), what="the table") == [
        "spawn failed: No such file or directory: no-such-program-here"]


def test_pull_fetches_the_paths_that_exist_and_names_the_missing_one(
        master: MasterAPI, spawn_client, tmp_path: Path) -> None:
    client = spawn_client("n1", master.address)
    assert master.wait_ready(1, timeout=PATIENCE).reached
    client.workdir.mkdir(parents=True, exist_ok=True)
    (client.workdir / "b.txt").write_text("b\n")
    (client.workdir / "c.txt").write_text("c\n")
    group = master.pull("n1", ["missing.txt", "b.txt", "c.txt"], str(tmp_path / "got"))
    assert (tmp_path / "got" / "n1" / "b.txt").read_text() == "b\n"
    assert (tmp_path / "got" / "n1" / "c.txt").read_text() == "c\n"
    message = group.errors["n1"].message
    assert "missing.txt: no such file or folder" in message, message
    assert "2 files of the other paths pulled" in message


def test_ctrl_c_during_a_pull_stops_the_client_cleanly(master: MasterAPI, spawn_client,
                                                       tmp_path: Path) -> None:
    client = spawn_client("n1", master.address)
    assert master.wait_ready(1, timeout=PATIENCE).reached
    client.workdir.mkdir(parents=True, exist_ok=True)
    with open(client.workdir / "big.bin", "wb") as out:
        out.truncate(512 * 1024 * 1024)  # sparse: quick to make, long to send

    interrupted = []

    def interrupt_once(_progress: object) -> None:
        # Once: progress may still arrive while the client stops, and a second Ctrl-C
        # then (the client's signal handlers already gone) would kill it outright.
        if not interrupted:
            interrupted.append(True)
            client.signal(signal.SIGINT)

    group = master.pull("n1", ["big.bin"], str(tmp_path / "got"), progress=interrupt_once)
    assert group.failed == ["n1"]
    assert client.proc is not None
    assert client.proc.wait(timeout=PATIENCE) == 0
    text = client.log_text()
    assert "stopping on SIGINT" in text and "stopped" in text
    assert "closed in another greenlet" not in text and "Traceback" not in text, text
