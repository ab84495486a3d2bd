"""The real ``corral-master`` process: scripted commands, stdin, exit status, restarts,
and the interactive console in a pseudo-terminal."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

from tests.harness import PATIENCE, ROOT, python_env, wait_until


def ready_rows(text: str) -> dict[str, str]:
    """name -> short id for the READY rows of a node table."""
    rows = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) > 3 and fields[3] == "READY":
            rows[fields[0]] = fields[1]
    return rows


@pytest.mark.slow
def test_commands_as_arguments(spawn_master, spawn_client) -> None:
    # The master listens first (port 0), so start it waiting, then the clients.
    master = spawn_master(["list --wait 3 --timeout 30", "quit"])
    clients = [spawn_client(name, master.address) for name in ("n1", "n2", "n3")]
    out, err = master.proc.communicate(timeout=PATIENCE * 2)
    assert master.proc.returncode == 0, err
    assert ready_rows(out) == {c.name: c.node_id[:8] for c in clients}


@pytest.mark.slow
def test_failed_command_gives_nonzero_exit(spawn_master) -> None:
    master = spawn_master(["list --wait 1 --timeout 0.3", "quit"])
    _out, err = master.proc.communicate(timeout=PATIENCE)
    assert master.proc.returncode == 1
    assert "only 0 of 1 nodes READY" in err


def test_commands_on_stdin(spawn_master, spawn_client) -> None:
    master = spawn_master()
    spawn_client("n1", master.address)
    out, err = master.proc.communicate("list --wait 1 --timeout 30\nlist\n", timeout=PATIENCE)
    assert master.proc.returncode == 0, err
    assert out.count("READY") == 2  # both tables; EOF then ends the master cleanly


@pytest.mark.slow
def test_master_restart_keeps_node_ids(spawn_master, spawn_client) -> None:
    first = spawn_master()
    clients = [spawn_client(name, first.address) for name in ("n1", "n2", "n3")]
    port = first.port
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait()
    again = spawn_master(["list --wait 3 --timeout 30", "quit"], port=port)
    out, err = again.proc.communicate(timeout=PATIENCE * 2)
    assert again.proc.returncode == 0, err
    assert ready_rows(out) == {c.name: c.node_id[:8] for c in clients}


@pytest.mark.slow
def test_bad_port_is_a_clear_error(spawn_master) -> None:
    busy = spawn_master()
    result = subprocess.run(
        [sys.executable, "-m", "master", "--port", str(busy.port), "--token-file",
         str(busy.token_file), "--log-dir", str(busy.base), "quit"],
        capture_output=True, text=True, env=python_env(), cwd=ROOT, timeout=PATIENCE,
    )
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{busy.port}" in result.stderr


@pytest.mark.slow  # a master process per value: seconds each
@pytest.mark.parametrize("option", ["--heartbeat", "--handshake-timeout",
                                    "--request-timeout"])
def test_durations_must_be_finite_and_positive(option: str, tmp_path: Path) -> None:
    """nan would never time out (and a nan heartbeat never sends one): one line, exit 2."""
    for bad in ("nan", "inf", "0", "-1"):
        result = subprocess.run(
            [sys.executable, "-m", "master", "--state-dir", str(tmp_path / "state"),
             "--log-dir", str(tmp_path), option, bad, "quit"],
            capture_output=True, text=True, env=python_env(), cwd=ROOT, timeout=PATIENCE)
        assert result.returncode == 2, (option, bad)
        assert result.stderr.splitlines()[-1] == (
            f"corral-master: error: argument {option}: must be a positive, finite number "
            "of seconds"), (option, bad)


def spawn_console(master_argv: list[str]) -> pexpect.spawn:
    env = python_env()
    env["PROMPT_TOOLKIT_NO_CPR"] = "1"  # pexpect does not answer cursor-position queries
    env["TERM"] = "xterm"
    child = pexpect.spawn(master_argv[0], master_argv[1:], env=env, cwd=str(ROOT),
                          encoding="utf-8", timeout=PATIENCE, dimensions=(40, 200))
    child.expect(r"listening on [\d.]+:(\d+)")
    return child


@pytest.mark.slow
def test_interactive_console_in_a_terminal(tmp_path, token_file, spawn_client) -> None:
    from tests.harness import MasterProcess

    argv = MasterProcess(tmp_path, token_file, 0, ["--heartbeat", "0.2"]).argv([])
    child = spawn_console(argv)
    try:
        port = int(child.match.group(1))
        child.expect_exact("corral>")
        # A node joining while the prompt waits shows up as a notice above it.
        client = spawn_client("n1", ("127.0.0.1", port))
        child.expect(r"node n1: CONNECTING -> READY")
        # Sit idle at the prompt for 10 heartbeat intervals: had heartbeats stopped being
        # read while the console waits for a key, n1 would now be GONE.
        wait_until(lambda: client.proc.poll() is None and _idle(child, 2.0), what="idle")
        child.sendline("list")
        child.expect(r"n1\s+\w{8}\s+127\.0\.0\.1:\d+\s+READY\s+(\d+\.\d)")
        assert float(child.match.group(1)) < 0.6
        child.expect_exact("corral>")
        # Ctrl-C cancels a long wait without leaving the console.
        child.sendline("list --wait 5")
        log = tmp_path / "master-logs" / "master.log"
        wait_until(lambda: "waiting for 5 READY nodes" in log.read_text(), what="wait begun")
        child.sendcontrol("c")
        child.expect("cancelled")
        child.expect_exact("corral>")
        child.sendline("list")
        child.expect(r"n1\s+\w{8}\s+127\.0\.0\.1:\d+\s+READY")
        child.sendline("quit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    # The client saw the master go and keeps retrying.
    wait_until(lambda: "closed the connection" in client.log_text())
    assert client.proc.poll() is None


def _idle(child: pexpect.spawn, seconds: float) -> bool:
    """Let the console sit for ``seconds`` with no input, printing whatever arrives."""
    try:
        child.expect(re.compile("GONE|MISSING"), timeout=seconds)
    except pexpect.TIMEOUT:
        return True
    raise AssertionError(f"node lost while console idle: {child.before!r}{child.after!r}")


@pytest.mark.slow
def test_ctrl_c_stops_wait_and_log_follow(tmp_path, token_file, spawn_client) -> None:
    from tests.harness import MasterProcess

    child = spawn_console(MasterProcess(tmp_path, token_file, 0).argv([]))
    try:
        spawn_client("n1", ("127.0.0.1", int(child.match.group(1))))
        child.expect(r"node n1: CONNECTING -> READY")
        child.sendline("exec -- sh -c 'while true; do echo tick; sleep 0.1; done'")
        child.expect(r"(n1:\d+)\s+sh -c")
        ref = child.match.group(1)
        child.expect_exact("corral>")
        log = tmp_path / "master-logs" / "master.log"
        child.sendline(f"wait {ref}")
        wait_until(lambda: f"waiting for {ref} to end" in log.read_text(), what="wait begun")
        child.sendcontrol("c")
        child.expect("cancelled")
        child.expect_exact("corral>")
        child.sendline(f"log {ref} -f")
        child.expect("tick\r?\n.*tick")  # following: new lines keep arriving
        child.sendcontrol("c")
        child.expect_exact("corral>")
        child.sendline(f"sKill {ref}")
        child.expect(f"{ref}\\s+killed SIGKILL")
        child.sendline("quit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
