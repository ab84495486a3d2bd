"""A hostile review of jobs (issue 11, part A): what an operator, a script author or a
hand-edited state file did to them, and what each must do. Real master and clients."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.messages import ExecRequest, Message
from common.procs import ProcInfo
from master.api import MasterAPI
from master.console import CorralConsole
from tests.harness import PATIENCE, ROOT, python_env, wait_until
from tests.test_jobs import run_line


@pytest.fixture
def console(master: MasterAPI) -> CorralConsole:
    return CorralConsole(master, interactive=False, stdout=io.StringIO())


def test_exec_of_a_billion_copies_is_refused_before_it_becomes_a_job(
        master: MasterAPI, spawn_client, console: CorralConsole,
        capsys: pytest.CaptureFixture[str]) -> None:
    # Once a job of 10^9 ranks per node existed, `jobs`, `wait` and `log` on it walked every
    # rank on the hub thread: the master stopped answering anything, heartbeats included.
    spawn_client("n1", master.address)
    assert master.wait_ready(1, timeout=30).reached
    capsys.readouterr()
    _text, status = run_line(console, "exec -n 1000000000 -- true")
    assert status == 1
    assert capsys.readouterr().err.strip() == (
        "error: -n COUNT must be 1 to 10,000 copies per node, not 1,000,000,000")
    assert master.job_names() == []
    _text, status = run_line(console, "exec -n 10001 -- true")
    assert status == 1
    assert capsys.readouterr().err.strip().endswith("not 10,001")
    assert master.job_names() == []
    _text, status = run_line(console, "exec -n 2 -- true")
    assert status == 0 and len(master.jobs()[0].nodes) == 1


def test_a_hand_edited_job_of_a_billion_ranks_is_skipped(tmp_path: Path) -> None:
    from master.jobs import FILE_NAME, JobStore

    def record(seq: int, copies: int) -> str:
        return json.dumps({"seq": seq, "command": "true", "origin": "exec", "created": 0.0,
                           "placement": [["n1", 0, copies]]})

    (tmp_path / FILE_NAME).write_text(
        "\n".join([record(1, 2), record(2, 10**9), record(3, 0), record(10**13, 1)]) + "\n")
    store = JobStore(tmp_path)
    assert [job.name for job in store.jobs()] == ["J1"]
    assert store.create("next", "exec", ["n1"], 1).name == "J2"
    store.close()


def master_with_a_sleeper(spawn_master, spawn_client):  # type: ignore[no-untyped-def]
    """A headless master, n1 READY, and J1: one `sleep 600` on n1 (the test kills it)."""
    from tests.test_service import control_of, corral

    master = spawn_master(extra=["--no-console"])
    spawn_client("n1", master.address)
    control = control_of(master)
    assert corral(control, "list", "--wait", "1", "--timeout", "30").returncode == 0
    started = corral(control, "--json", "exec", "--", "sleep", "600")
    (info,) = json.loads(started.stdout)["result"]["results"]["n1"]
    return master, control, info


@pytest.mark.slow
def test_a_job_number_given_again_never_reaches_the_old_jobs_processes(
        spawn_master, spawn_client) -> None:
    from tests.test_service import corral

    master, control, old = master_with_a_sleeper(spawn_master, spawn_client)
    try:
        assert old["job"] == "J1"
        master.stop()
        # jobs.jsonl lost (set aside as corrupt): the numbers start again at J1, while n1
        # still runs the old J1's process.
        (master.base / "master-state" / "jobs.jsonl").write_text("garbage\n")
        master = spawn_master(extra=["--no-console"], port=master.port)
        assert corral(control, "list", "--wait", "1", "--timeout", "30").returncode == 0
        refused = corral(control, "exec", "--cwd", "nowhere", "--", "true")
        assert refused.returncode == 1 and "no such folder" in refused.stderr
        listed = corral(control, "jobs").stdout.splitlines()[-1].split()
        assert listed[:2] == ["J1", "exec"] and listed[5:9] == ["0", "1", "0", "127"], listed
        killed = corral(control, "kill", "J1")
        assert killed.returncode == 1 and "never started: no such folder" in killed.stderr
        now = corral(control, "--json", "pid", "-w", "n1")
        (info,) = json.loads(now.stdout)["result"]["results"]["n1"]
        assert (info["pid"], info["state"]) == (old["pid"], "running"), info
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(old["pid"], signal.SIGKILL)


def test_a_job_its_node_refused_never_started(master: MasterAPI, spawn_client,
                                              console: CorralConsole) -> None:
    # README: a job's status is 127 for a process that never started. A node refusing the
    # whole command (no such folder, a program not allowed) gave 255 "unknown", and `jobs`
    # counted the process lost, as if it might still run somewhere.
    spawn_client("n1", master.address)
    second = spawn_client("n2", master.address)
    assert master.wait_ready(2, timeout=30).reached
    (second.workdir / "only-on-n2").mkdir()
    started = master.exec(None, ["true"], cwd="only-on-n2")
    assert sorted(started.errors) == ["n1"] and "no such folder" in started.errors["n1"].message
    job = master.job_names()[0]
    text, status = run_line(console, f"wait {job}")
    assert status == 127, text
    rows = [line.split()[:4] for line in text.splitlines()[2:4]]
    assert rows == [["0", f"{job}.0", "never", "started"],
                    ["1", f"n2:{started.results['n2'][0].pid}", "exited", "0"]], text
    (view,) = master.jobs()
    assert (view.running, view.ended, view.lost, view.worst) == (0, 2, 0, 127)


@pytest.mark.slow
def test_a_failed_select_inside_w_runs_nothing_and_fails(spawn_master, spawn_client) -> None:
    # The README's own pattern. Under set -e a failed $(...) in another command's arguments
    # does not stop the script, so `-w ""` reached exec, ran on no node and exited 0.
    from tests.test_service import control_of

    master = spawn_master(extra=["--no-console"])
    client = spawn_client("n1", master.address)
    corral = shlex.join([sys.executable, "-m", "master.front.cli", "--control",
                         str(control_of(master))])
    script = (f"set -e\n{corral} list --wait 1 --timeout 30 >/dev/null\n"
              f'{corral} exec -w "$({corral} select --state MISSING)" -- touch ran\n'
              f'{corral} run -w "" -- touch ran\n'
              "echo went on\n")
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                          env=python_env(), cwd=ROOT, timeout=PATIENCE * 2)
    assert done.returncode == 2, done  # a usage error
    assert "went on" not in done.stdout
    assert done.stderr.splitlines() == ["error: no MISSING nodes",
                                        "corral: error: empty node set '': name at least "
                                        "one node"], done.stderr
    assert not (client.workdir / "ran").exists()


def test_job_words_take_ascii_digits_and_say_the_range(
        master: MasterAPI, spawn_client, console: CorralConsole,
        capsys: pytest.CaptureFixture[str]) -> None:
    spawn_client("n1", master.address)
    assert master.wait_ready(1, timeout=30).reached
    job = master.exec("n1", ["true"]).results["n1"][0].job
    assert job == "J1"
    for line, message in [("wait J\u0661", "bad job 'J\u0661': expected J<number>"),  # Arabic 1
                          ("kill J1.\u0660", "bad job 'J1.\u0660': expected J<number>"),
                          ("wait J9999999999999",
                           "bad job 'J9999999999999': job numbers are J1 to J999999999999")]:
        capsys.readouterr()
        _text, status = run_line(console, line)
        assert status == 1, line
        assert message in capsys.readouterr().err, line


def test_a_forged_node_cannot_claim_another_nodes_ranks(master: MasterAPI,
                                                         spawn_client) -> None:
    # A peer holding the token answers exec with processes of every rank of the job; the
    # master took their pids for the ranks of n1 too, and n1's real process no longer
    # counted as the job's.
    from tests.test_hardening import scripted

    def answer(request: Message) -> object:
        if isinstance(request, ExecRequest):
            return [ProcInfo(seq=rank + 1, pid=4000 + rank, argv=request.argv, cwd="/",
                             log="/dev/null", state="running", started=time.time(),
                             job=request.job, rank=rank).to_wire()
                    for rank in range(request.size)]
        return []

    forged = scripted(master, "m1", answer)  # before n1 in node order: rank 0
    try:
        spawn_client("n1", master.address)
        assert master.wait_ready(2, timeout=30).reached
        group = master.exec(None, ["sh", "-c", "exit 3"])
        real = group.results["n1"][0]
        results = master.wait([real.job], timeout=30)
        assert [(r.rank, r.ref, r.status) for r in results][1] == (
            1, f"n1:{real.pid}", 3), results
    finally:
        forged.stop()


@pytest.mark.slow
def test_wait_says_the_master_stopped_rather_than_the_nodes_went(spawn_master,
                                                                  spawn_client) -> None:
    # Stopping the master during `corral wait J1` reported "n1 went GONE while waiting":
    # the operator went looking for a dead node that was fine.
    master, control, info = master_with_a_sleeper(spawn_master, spawn_client)
    try:
        waiting = subprocess.Popen(
            [sys.executable, "-m", "master.front.cli", "--control", str(control),
             "wait", "J1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=python_env(), cwd=ROOT)
        wait_until(lambda: "waiting for J1" in master.log_text(), what="the wait to begin")
        assert master.proc is not None
        master.proc.terminate()
        _out, err = waiting.communicate(timeout=PATIENCE)
        assert waiting.returncode == 255
        assert err.startswith(f"n1:{info['pid']}: error: lost: n1 went GONE while waiting "
                              "(master shutting down); "), err
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(info["pid"], signal.SIGKILL)
