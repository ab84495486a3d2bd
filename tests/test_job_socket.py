"""``corral`` inside a job: the client's job socket (``CORRAL_SOCKET``), calls forwarded to
the master and attributed to the process that made them, and what a forged
``CORRAL_SOCKET`` can and cannot do. Real master, clients and CLI processes."""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from common.calls import ForwardedCall
from master.front.control import NoMaster, SocketBackend
from tests.conftest import TOKEN
from tests.harness import PATIENCE, ROOT, ClientProcess, MasterProcess, wait_until
from tests.peers import ScriptedNode
from tests.test_variables import control_of, corral

CORRAL = f"{shlex.quote(sys.executable)} -m master.front.cli"  # as a job runs it


def job_socket(client: ClientProcess) -> Path:
    return client.state_dir / "job.sock"


def start_cluster(spawn_master, spawn_client, monkeypatch, names=("n1", "n2"),  # type: ignore[no-untyped-def]
                  client_options=()):
    """A headless master with clients ``names``, READY; jobs find corral's modules."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    master = spawn_master(extra=["--no-console"])
    clients = [spawn_client(name, master.address, extra=list(client_options))
               for name in names]
    done = corral(control_of(master), "list", "--wait", str(len(names)), "--timeout", "30")
    assert done.returncode == 0, done.stderr
    return master, clients


@pytest.fixture
def cluster(spawn_master, spawn_client, monkeypatch):  # type: ignore[no-untyped-def]
    return start_cluster(spawn_master, spawn_client, monkeypatch)


def run_on(master: MasterProcess, node: str, command: str) -> dict[str, Any]:
    """Run ``command`` on ``node``; its run-answer (exit_code, stdout, stderr)."""
    done = corral(control_of(master), "--json", "run", "-w", node, "--", command)
    return json.loads(done.stdout)["result"]["results"][node]


@pytest.mark.slow
def test_a_job_sets_and_gets_through_its_client(cluster) -> None:  # type: ignore[no-untyped-def]
    master, (n1, _n2) = cluster
    answer = run_on(master, "n1", f'echo "$CORRAL_SOCKET"; {CORRAL} var set from_job "a b"'
                                  f' && {CORRAL} var get from_job')
    assert answer["exit_code"] == 0, answer["stderr"]
    assert answer["stdout"] == f"{job_socket(n1)}\na b\n"
    entry = json.loads(corral(control_of(master), "--json", "var", "get", "from_job").stdout)
    # Attributed to the process the client started (the shell of `run`, rank 0 of its
    # job), on its node.
    set_by = entry["result"]["set_by"]
    assert set_by.startswith(f"n1:{answer['pid']} (J") and set_by.endswith(".0)")


@pytest.mark.slow
def test_job_socket_is_private(cluster) -> None:  # type: ignore[no-untyped-def]
    _master, (n1, _n2) = cluster
    mode = job_socket(n1).stat().st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600


@pytest.mark.slow
def test_a_process_the_client_did_not_start_is_refused(cluster) -> None:  # type: ignore[no-untyped-def]
    """Same user, but not a process of that client: this test's own process."""
    master, (n1, _n2) = cluster
    with pytest.raises(NoMaster) as refused:
        SocketBackend(job_socket(n1)).call("var_set", {"name": "x", "value": "1"})
    assert "serves only the processes that node's client started" in refused.value.message
    assert f"pid {os.getpid()} is none of them" in refused.value.message
    assert corral(control_of(master), "var", "get", "x").returncode == 1
    assert "job socket: refused pid" in n1.log_text()


@pytest.mark.slow
def test_forged_corral_socket(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    master, (n1, n2) = cluster
    (tmp_path / "plain").write_text("not a socket")
    # Another node's socket: refused there, so nothing is done in n2's name.
    other = run_on(master, "n1", f"CORRAL_SOCKET={job_socket(n2)} {CORRAL} var set x 1")
    assert other["exit_code"] == 3
    assert other["stderr"].startswith(f"corral: refused: the job socket {job_socket(n2)} of "
                                      "node n2 serves only")
    assert len(other["stderr"].splitlines()) == 1
    assert corral(control_of(master), "var", "get", "x").returncode == 1
    # Nothing there, or not a socket: one line, exit 3.
    for forged in (tmp_path / "nothing", tmp_path / "plain"):
        answer = run_on(master, "n1", f"CORRAL_SOCKET={forged} {CORRAL} var get x")
        assert answer["exit_code"] == 3
        assert answer["stderr"].startswith(f"corral: no corral client (CORRAL_SOCKET) at "
                                           f"{forged} (")
        assert len(answer["stderr"].splitlines()) == 1
    # The sockets still serve their own processes.
    for node in ("n1", "n2"):
        answer = run_on(master, node, f"{CORRAL} var set ok_{node} 1")
        assert answer["exit_code"] == 0, answer["stderr"]
    assert n1.proc is not None and n1.proc.poll() is None


@pytest.mark.slow
def test_garbage_on_the_job_socket_harms_nothing(cluster) -> None:  # type: ignore[no-untyped-def]
    """A job that writes nonsense, or a frame of the wrong shape, gets an error; the
    node's connection to the master and the next call are fine."""
    master, (n1, _n2) = cluster
    script = (
        "import socket, struct, sys, msgpack\n"
        f"path = {str(job_socket(n1))!r}\n"
        "for body in (b'\\xc1garbage', msgpack.packb({'t': 'call', 'op': 5, 'args': {}}),\n"
        "             msgpack.packb({'t': 'call', 'op': 'no_such_op', 'args': {}}),\n"
        "             msgpack.packb({'t': 'call', 'op': 'var_set', 'args': {'name': 1}})):\n"
        "    s = socket.socket(socket.AF_UNIX); s.connect(path)\n"
        "    s.sendall(struct.pack('>I', len(body)) + body)\n"
        "    reply = s.recv(65536); print(len(reply) > 4); s.close()\n"
        "s = socket.socket(socket.AF_UNIX); s.connect(path)\n"
        "s.sendall(struct.pack('>I', 1 << 30)); print(s.recv(65536)[:4] != b''); s.close()\n")
    answer = run_on(master, "n1", f"{shlex.quote(sys.executable)} -c {shlex.quote(script)}")
    assert answer["exit_code"] == 0, answer["stderr"]
    assert answer["stdout"].split() == ["True"] * 5
    again = run_on(master, "n1", f"{CORRAL} var set after 1")
    assert again["exit_code"] == 0, again["stderr"]
    assert "closed" not in corral(control_of(master), "list").stdout


@pytest.mark.slow
def test_streamed_results_come_through(cluster) -> None:  # type: ignore[no-untyped-def]
    """What streams before a result (a log, a watched variable) is forwarded too."""
    master, _clients = cluster
    started = corral(control_of(master), "--json", "exec", "-w", "n2", "--", "sh", "-c",
                     "seq 1 5")
    pid = json.loads(started.stdout)["result"]["results"]["n2"][0]["pid"]
    corral(control_of(master), "wait", f"n2:{pid}")
    answer = run_on(master, "n1", f"{CORRAL} log -n 0 n2:{pid}")
    assert (answer["exit_code"], answer["stdout"]) == (0, "1\n2\n3\n4\n5\n")
    assert corral(control_of(master), "var", "set", "w", "first").returncode == 0
    watched = run_on(master, "n1", f"timeout -s INT 2 {CORRAL} var watch w; "
                                    f"{CORRAL} var get w")
    assert watched["stdout"].startswith("w=first\n")


@pytest.mark.slow
def test_a_client_without_its_master(cluster) -> None:  # type: ignore[no-untyped-def]
    """The master goes while a job's call waits: the job gets one line and exit 1."""
    master, (n1, _n2) = cluster
    out = n1.workdir / "out"
    probe = f"{CORRAL} var get --wait back_again > {out} 2>&1; echo $? >> {out}"
    started = corral(control_of(master), "--json", "exec", "-w", "n1", "--", "sh", "-c",
                     probe)
    shell = psutil.Process(json.loads(started.stdout)["result"]["results"]["n1"][0]["pid"])
    wait_until(lambda: any(child.net_connections(kind="unix")
                           for child in shell.children()), what="the job's call")
    master.stop()
    wait_until(lambda: out.exists() and out.read_text().count("\n") >= 2,
               what="the job's answer")
    assert out.read_text() == ("corral: error: node n1 lost its connection to the master "
                               "during the call\n1\n")


@pytest.mark.slow
def test_what_a_job_may_not_ask(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """copy, pull and script would read and write files on the master's machine: refused."""
    master, _clients = cluster
    secret = tmp_path / "secret"
    secret.write_text("the master's")
    answer = run_on(master, "n1", f"{CORRAL} copy {secret} stolen; echo $? >&2; "
                                  f"{CORRAL} pull -w n1 x {tmp_path}/into; "
                                  f"{CORRAL} script -w n1 {secret}")
    refusal = ("corral: error: {} reads or writes files on the master's machine: not from "
               "inside a job (run it where the master runs)")
    assert answer["stderr"].splitlines() == [refusal.format("copy"), "1",
                                             refusal.format("pull"), refusal.format("script")]
    assert not (tmp_path / "into").exists()


@pytest.mark.slow
def test_job_calls_shared(spawn_master, spawn_client, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    master = spawn_master(extra=["--no-console", "--job-calls", "shared"])
    spawn_client("n1", master.address)
    assert corral(control_of(master), "list", "--wait", "1", "--timeout", "30").returncode == 0
    answer = run_on(master, "n1", f"{CORRAL} var set a 1 && {CORRAL} run -- true")
    assert answer["stderr"] == ("corral: error: this master lets jobs use only var and "
                                "barrier (--job-calls shared), not run\n")
    assert corral(control_of(master), "var", "get", "a").stdout == "1\n"


@pytest.mark.slow
def test_two_clients_cannot_share_a_state_folder(cluster, spawn_client) -> None:  # type: ignore[no-untyped-def]
    master, (n1, _n2) = cluster
    second = spawn_client("n1", master.address)  # the same folders as the running n1
    assert second.proc.wait(30) == 2
    assert (f"job socket {job_socket(n1)}: another client already answers on "
            f"{job_socket(n1)}: two clients cannot share one state folder") in second.log_text()
    assert run_on(master, "n1", f"{CORRAL} var set still 1")["exit_code"] == 0


@pytest.mark.slow
def test_a_job_that_does_not_read_its_stream_is_stopped(cluster) -> None:  # type: ignore[no-untyped-def]
    """A job watches a variable and does not read: its client keeps a bounded backlog,
    then stops the call and says why; the node and other calls are unharmed."""
    master, (n1, _n2) = cluster
    go = n1.workdir / "go"
    script = (
        "import os, socket, struct, time, msgpack\n"
        "s = socket.socket(socket.AF_UNIX); s.connect(os.environ['CORRAL_SOCKET'])\n"
        "body = msgpack.packb({'t': 'call', 'op': 'var_watch', 'args': {'name': 'big'}})\n"
        "s.sendall(struct.pack('>I', len(body)) + body)\n"
        f"while not os.path.exists({str(go)!r}): time.sleep(0.05)\n"
        "unpacker = msgpack.Unpacker(raw=False); last = None; data = b''\n"
        "while True:\n"
        "    chunk = s.recv(1 << 20)\n"
        "    if not chunk: break\n"
        "    data += chunk\n"
        "    while len(data) >= 4 and len(data) >= 4 + struct.unpack('>I', data[:4])[0]:\n"
        "        n = struct.unpack('>I', data[:4])[0]; last = msgpack.unpackb(data[4:4 + n])\n"
        "        data = data[4 + n:]\n"
        "print(last['t'], last.get('message'))\n")
    out = n1.workdir / "watch.out"
    started = corral(control_of(master), "--json", "exec", "-w", "n1", "--", "sh", "-c",
                     f"{shlex.quote(sys.executable)} -c {shlex.quote(script)} > {out} 2>&1")
    assert started.returncode == 0
    shell = psutil.Process(json.loads(started.stdout)["result"]["results"]["n1"][0]["pid"])
    wait_until(lambda: any(child.net_connections(kind="unix")
                           for child in shell.children()), what="the watcher connected")
    backend = SocketBackend(control_of(master))
    for n in range(200):
        backend.call("var_set", {"name": "big", "value": str(n % 10) * 60_000})
    go.write_text("")
    wait_until(lambda: out.exists() and out.read_text().strip(), what="the watcher's end")
    assert out.read_text() == ("error stopped: the calling process read too slowly (64 items "
                               "waited for it)\n")
    assert run_on(master, "n1", f"{CORRAL} var get big | wc -c")["stdout"].strip() == "60001"


@pytest.mark.slow
def test_a_client_cannot_pass_its_calls_off_as_another_nodes(spawn_master) -> None:  # type: ignore[no-untyped-def]
    """A peer holding the token forwards a call whose ``ref`` names a process of n2: the
    variable it sets is still recorded as set from its own node, not n2's."""
    master = spawn_master(extra=["--no-console"])
    control = control_of(master)
    evil = ScriptedNode(master.address, "evil", TOKEN.encode()).start()
    try:
        assert corral(control, "list", "--wait", "1", "--timeout", "30").returncode == 0
        evil.send(ForwardedCall(req=1, op="var_set", args={"name": "x", "value": "1"},
                                pid=77, ref="n2:77", job="J1.0"))
        wait_until(lambda: corral(control, "var", "get", "x").returncode == 0,
                   what="x set by the scripted node")
        set_by = json.loads(corral(control, "--json", "var", "get", "x").stdout)["result"][
            "set_by"]
        assert set_by.startswith("evil:"), set_by
    finally:
        evil.stop()


@pytest.mark.slow
def test_a_job_holding_many_idle_connections_leaves_its_node_working(  # type: ignore[no-untyped-def]
        spawn_master, spawn_client, monkeypatch) -> None:
    """A job opens connections to CORRAL_SOCKET and never sends a call: the client keeps
    descriptors enough to start other processes, and the call over the limit is told why.
    (The connections are held longer than the test: the first-frame timeout, tested
    below, would otherwise close them.)"""
    master, (n1, _n2) = start_cluster(spawn_master, spawn_client, monkeypatch,
                                      client_options=["--job-socket-timeout", "600"])
    limit = 1_400  # the client's descriptors: a little above the job socket's 1,000
    psutil.Process(n1.pid).rlimit(psutil.RLIMIT_NOFILE, (limit, 20_000))
    held = n1.workdir / "held"
    script = (
        "import resource, socket, sys, time\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (20_000, 20_000))\n"
        f"path, held = {str(job_socket(n1))!r}, {str(held)!r}\n"
        "kept = []\n"
        f"for _ in range({limit}):\n"
        "    s = socket.socket(socket.AF_UNIX); s.connect(path); kept.append(s)\n"
        "open(held, 'w').close()\n"
        "time.sleep(600)\n")
    job = corral(control_of(master), "exec", "-w", "n1", "--", sys.executable, "-c", script)
    assert job.returncode == 0, job.stderr
    try:
        wait_until(held.exists, what="the job holding its connections")
        done = corral(control_of(master), "--json", "run", "-w", "n1", "--",
                      f"echo started; {CORRAL} var set after 1")
        assert done.returncode in (0, 1), done.stderr
        assert "n1" in json.loads(done.stdout)["result"]["results"], done.stdout
        answer = json.loads(done.stdout)["result"]["results"]["n1"]
        assert answer["stdout"] == "started\n"
        assert answer["stderr"] == ("corral: error: 1,000 connections to the job socket of "
                                    "node n1 are open already; try again when some have "
                                    "ended\n")
    finally:
        corral(control_of(master), "kill", "-s", "KILL", "-w", "n1", "--all")
    wait_until(lambda: run_on(master, "n1", f"{CORRAL} var set after 1")["exit_code"] == 0,
               what="calls again once the job has gone")


FIRST_FRAME_PROBE = """\
import os, socket, struct, time, msgpack
s = socket.socket(socket.AF_UNIX); s.connect(os.environ['CORRAL_SOCKET'])
data = b''
while chunk := s.recv(65536):
    data += chunk
size = struct.unpack('>I', data[:4])[0]
frame = msgpack.unpackb(data[4:4 + size])
print(frame['t'], frame['code'], frame['message'])
"""


@pytest.mark.slow
def test_a_connection_that_never_calls_is_closed(spawn_master, spawn_client,  # type: ignore[no-untyped-def]
                                                 monkeypatch) -> None:
    """A process connects to its job socket and says nothing: after the client's
    --job-socket-timeout it is told why and closed, so it holds no place for ever."""
    master, _clients = start_cluster(spawn_master, spawn_client, monkeypatch, names=("n1",),
                                  client_options=["--job-socket-timeout", "0.5"])
    answer = run_on(master, "n1", f"{shlex.quote(sys.executable)} -c "
                                  f"{shlex.quote(FIRST_FRAME_PROBE)}")
    assert answer["exit_code"] == 0, answer["stderr"]
    assert answer["stdout"] == ("error 6 no call within 0.5 s of connecting to the job socket "
                                "of node n1; closed\n")
    # A call that waits longer than that once it is sent is not cut.
    slow = run_on(master, "n1", f"{CORRAL} var get --wait --timeout 2 never; echo $?")
    assert slow["stdout"] == "1\n"
    assert slow["stderr"] == "corral: error: no variable never after waiting 2 s\n"


def test_the_first_frame_timeout_option(tmp_path: Path) -> None:
    from client.cli import build_parser

    assert build_parser().parse_args(["--master", "h:1"]).job_socket_timeout == 10.0
    for bad in ("nan", "inf", "0", "-1", "x"):
        refused = subprocess.run(
            [sys.executable, "-m", "client", "--master", "127.0.0.1:1",
             "--state-dir", str(tmp_path), "--job-socket-timeout", bad],
            capture_output=True, text=True, cwd=ROOT, timeout=PATIENCE)
        assert refused.returncode == 2, bad
        assert refused.stderr.splitlines()[-1].startswith(
            "corral-client: error: argument --job-socket-timeout: "), bad
