"""A shell command run on the nodes (``run``, or any other word) is a process like any
other while it runs, and Ctrl-C at the console, or the master's own patience running out,
stops it on the nodes."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

import pexpect
import psutil
import pytest

from master.api import MasterAPI
from master.server import MasterConfig
from tests.conftest import TOKEN
from tests.harness import MasterProcess, wait_until
from tests.test_master_process import spawn_console


def children_running(client: Any, name: str) -> list[psutil.Process]:
    try:
        kids = psutil.Process(client.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for kid in kids:
        try:
            if kid.status() != psutil.STATUS_ZOMBIE and name in " ".join(kid.cmdline()):
                found.append(kid)
        except psutil.NoSuchProcess:
            pass
    return found


@pytest.mark.slow
def test_ctrl_c_cancels_on_the_nodes(tmp_path, token_file, spawn_client) -> None:
    child = spawn_console(MasterProcess(tmp_path, token_file, 0).argv([]))
    try:
        port = int(child.match.group(1))
        clients = [spawn_client(name, ("127.0.0.1", port)) for name in ("n1", "n2")]
        for _ in clients:  # both READY, in whichever order they come
            child.expect(r"node n[12]: CONNECTING -> READY")
        child.expect_exact("corral>")
        child.sendline("sleep 31.5; echo never")  # the passthrough: any other word
        wait_until(lambda: all(children_running(c, "sleep 31.5") for c in clients),
                   what="both sleeps started")
        child.sendcontrol("c")
        child.expect(r"\[n1\] cancelled")
        child.expect(r"\[n2\] cancelled")
        child.expect("0 succeeded, 2 failed, 2 total")
        child.expect_exact("corral>")
        for client in clients:
            wait_until(lambda c=client: not children_running(c, "sleep 31.5"),
                       what="the command stopped on the node")
        # The command was a process of the client's table, ended by the signal.
        child.sendline("pid -w n1")
        child.expect(r"n1:\d+\s+/bin/sh -c sleep 31.5; echo never\s+killed SIGINT")
        child.sendline("quit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)


def test_running_command_shows_in_pid_and_kill_reaches_it(master: MasterAPI,
                                                           spawn_client) -> None:
    spawn_client("n1", master.address)
    assert master.wait_ready(1, timeout=30).reached
    outcome: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: outcome.setdefault(
        "group", master.run("n1", "echo begun; sleep 32.5", timeout=60)))
    runner.start()

    def running_ref() -> str | None:
        procs = master.processes("n1").results["n1"]
        mine = [p for p in procs if "sleep 32.5" in " ".join(p.argv) and not p.ended_state]
        return f"n1:{mine[0].pid}" if mine else None

    ref = wait_until(running_ref, what="the run command in pid")
    # Its output is in its log while it runs, as any process's.
    wait_until(lambda: master.log(ref, lines=0).data == b"begun\n", what="begun")
    (sent,) = master.signal([ref], signal.SIGTERM)
    assert sent.ok, sent.message
    runner.join(timeout=30)
    result = outcome["group"].results["n1"]
    assert result.signal == signal.SIGTERM and not result.ok
    assert result.stdout == b"begun\n" and f"n1:{result.pid}" == ref


@pytest.mark.slow
def test_master_timeout_cancels_on_the_node(tmp_path, spawn_client, caplog) -> None:
    caplog.set_level(logging.INFO, logger="corral")
    # A slow heartbeat keeps the stopped client from being declared GONE meanwhile.
    api = MasterAPI.start(MasterConfig(port=0, heartbeat=5.0, log_dir=tmp_path), TOKEN.encode())
    try:
        client = spawn_client("n1", api.address)
        assert api.wait_ready(1, timeout=30).reached
        client.signal(signal.SIGSTOP)  # it will not even read the request in time
        outcome: dict[str, Any] = {}
        runner = threading.Thread(target=lambda: outcome.setdefault(
            "group", api.run("n1", "sleep 33.5", timeout=0.5)))
        runner.start()
        # The master waits the command's 0.5 s and 5 s more, then cancels it there.
        wait_until(lambda: "cancelling the command on n1" in caplog.text, what="cancel")
        client.signal(signal.SIGCONT)
        runner.join(timeout=30)
        error = outcome["group"].errors["n1"]
        assert "no reply within 5.5 s" in error.message and "cancel" in error.message
        wait_until(lambda: not children_running(client, "sleep 33.5"), what="nothing left")
    finally:
        api.shutdown()
