"""Barriers (``corral barrier NAME --count N``) through real master, clients and CLI
processes: release, reuse, timeout, a participant's node lost, a participant that leaves."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from common.errors import CorralError
from master.front.control import SocketBackend
from tests.harness import PATIENCE, ROOT, python_env, wait_until
from tests.test_job_socket import CORRAL, start_cluster
from tests.test_variables import control_of, corral


def arrive(control: Path, name: str, count: int, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "master.front.cli", "--control",
                             str(control), "--json", "barrier", name, "--count", str(count),
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=python_env(), cwd=ROOT)


def arrived(control: Path, name: str) -> int:
    views = SocketBackend(control).call("barriers", {})
    return sum(len(view.participants) for view in views if view.name == name)


@pytest.fixture
def control(spawn_master) -> Path:  # type: ignore[no-untyped-def]
    return control_of(spawn_master(extra=["--no-console"]))


@pytest.mark.slow
def test_release_when_the_last_arrives_and_reuse(control: Path) -> None:
    first = [arrive(control, "step", 3) for _ in range(2)]
    try:
        wait_until(lambda: arrived(control, "step") == 2, what="two waiting")
        assert all(p.poll() is None for p in first)
        listed = corral(control, "barrier")
        assert "step" in listed.stdout and "2 of 3" in listed.stdout
        last = corral(control, "--json", "barrier", "step", "--count", "3")
        assert last.returncode == 0
        outcome = json.loads(last.stdout)["result"]
        assert outcome["generation"] == 1 and len(outcome["participants"]) == 3
        for process in first:
            assert process.wait(PATIENCE) == 0
            assert json.loads(process.communicate()[0])["result"]["generation"] == 1
    finally:
        for process in first:
            process.kill()
            process.wait()
    # Released: the name is free for its next generation.
    again = corral(control, "--json", "barrier", "step", "--count", "1")
    assert json.loads(again.stdout)["result"]["generation"] == 2
    assert corral(control, "barrier").stdout.strip() == "no barrier is waited at"


@pytest.mark.slow
def test_timeout_names_who_arrived_and_leaves(control: Path) -> None:
    waiting = arrive(control, "t", 3)
    try:
        wait_until(lambda: arrived(control, "t") == 1)
        timed = corral(control, "barrier", "t", "--count", "3", "--timeout", "0.3")
        assert timed.returncode == 1
        assert timed.stderr == ("corral: error: barrier t: timed out after 0.3 s with 2 of 3 "
                                "arrived (operator, operator); this one left\n")
        # The one that timed out is not counted: two more are needed, not one.
        assert arrived(control, "t") == 1
        third = arrive(control, "t", 3)
        wait_until(lambda: arrived(control, "t") == 2)
        assert waiting.poll() is None
        assert corral(control, "barrier", "t", "--count", "3").returncode == 0
        assert waiting.wait(PATIENCE) == 0 and third.wait(PATIENCE) == 0
    finally:
        waiting.kill()
        waiting.wait()


@pytest.mark.slow
def test_a_participant_interrupted_leaves_without_releasing(control: Path) -> None:
    leaver = arrive(control, "l", 2)
    wait_until(lambda: arrived(control, "l") == 1)
    leaver.send_signal(signal.SIGINT)
    assert leaver.wait(PATIENCE) == 130
    wait_until(lambda: arrived(control, "l") == 0, what="the leaver gone from the barrier")
    alone = corral(control, "barrier", "l", "--count", "2", "--timeout", "0.2")
    assert alone.returncode == 1 and "1 of 2 arrived" in alone.stderr


@pytest.mark.slow
def test_bad_input(control: Path) -> None:
    waiting = arrive(control, "c", 3)
    try:
        wait_until(lambda: arrived(control, "c") == 1)
        other = corral(control, "barrier", "c", "--count", "4")
        assert other.returncode == 2
        assert other.stderr == ("corral: error: barrier c waits for 3 participants, not 4 "
                                "(1 arrived: operator)\n")
    finally:
        waiting.kill()
        waiting.wait()
    for words, message in [(["b"], "barrier NAME needs --count N"),
                           (["b", "--count", "0"], "must be at least 1"),
                           (["b", "--count", "2", "--timeout", "0"], "must be positive"),
                           (["b a d", "--count", "2"], "bad name"),
                           (["--count", "2"], "barrier NAME --count N")]:
        done = corral(control, "barrier", *words)
        assert done.returncode == 2, words
        assert message in done.stderr.splitlines()[-1], (words, done.stderr)


@pytest.mark.slow
def test_a_node_lost_during_a_barrier_is_named(  # type: ignore[no-untyped-def]
        spawn_master, spawn_client, monkeypatch) -> None:
    """Processes on n1 and n2 and the operator wait at a barrier of 4; n2's client dies:
    the barrier fails for everyone still waiting, naming n2, and nothing is released."""
    master, (n1, n2) = start_cluster(spawn_master, spawn_client, monkeypatch)
    control = control_of(master)
    out = n1.workdir / "out"
    corral(control, "exec", "-w", "n1", "--", "sh", "-c",
           f"{CORRAL} barrier g --count 4 > {out} 2>&1; echo $? >> {out}")
    corral(control, "exec", "-w", "n2", "--", *CORRAL.split(), "barrier", "g", "--count",
           "4")
    wait_until(lambda: arrived(control, "g") == 2, what="both jobs at the barrier")
    operator = arrive(control, "g", 4, "--timeout", "60")
    wait_until(lambda: arrived(control, "g") == 3, what="the operator at the barrier")
    views = SocketBackend(control).call("barriers", {})
    assert any(p.startswith("n2:") for v in views for p in v.participants)
    n2.proc.kill()
    n2.proc.wait()
    assert operator.wait(PATIENCE) == 1
    _out, err = operator.communicate()
    assert err.startswith("corral: error: barrier g: node n2 went GONE while n2:")
    assert err.endswith(" waited at it (3 of 4 had arrived)\n")
    wait_until(lambda: out.exists() and out.read_text().count("\n") >= 2)
    text = out.read_text()
    assert "barrier g: node n2 went GONE" in text and text.endswith("1\n")
    assert corral(control, "barrier").stdout.strip() == "no barrier is waited at"


@pytest.mark.slow
def test_a_job_killed_at_a_barrier_leaves_it(  # type: ignore[no-untyped-def]
        spawn_master, spawn_client, monkeypatch) -> None:
    """Its client sees the job's connection close and cancels the call at the master."""
    master, _clients = start_cluster(spawn_master, spawn_client, monkeypatch, ("n1",))
    control = control_of(master)
    started = corral(control, "--json", "exec", "-w", "n1", "--", *CORRAL.split(),
                     "barrier", "k", "--count", "2")
    pid = json.loads(started.stdout)["result"]["results"]["n1"][0]["pid"]
    wait_until(lambda: arrived(control, "k") == 1, what="the job at the barrier")
    assert corral(control, "sKill", f"n1:{pid}").returncode == 0
    wait_until(lambda: arrived(control, "k") == 0, what="the killed job gone from it")
    alone = corral(control, "barrier", "k", "--count", "2", "--timeout", "0.2")
    assert alone.returncode == 1 and "1 of 2 arrived (operator)" in alone.stderr


@pytest.mark.slow
def test_a_timeout_that_is_not_a_number_of_seconds_is_refused(control: Path) -> None:
    """``--timeout nan`` (a typo, or a job's own frame) would wait forever, never timing
    out: it is bad input, said at once, by the CLI and by the master alike."""
    for words in (["barrier", "b", "--count", "2", "--timeout", "nan"],
                  ["var", "get", "v", "--wait", "--timeout", "nan"],
                  ["barrier", "b", "--count", "2", "--timeout", "inf"]):
        done = corral(control, *words)
        assert done.returncode == 2, (words, done.stderr)
        assert "--timeout" in done.stderr and "finite" in done.stderr, (words, done.stderr)
    backend = SocketBackend(control)
    for op, args in (("barrier", {"name": "b", "count": 2, "timeout": float("nan")}),
                     ("var_get", {"name": "v", "wait": True, "timeout": float("nan")})):
        with pytest.raises(CorralError, match="finite"):
            backend.call(op, args)
    assert corral(control, "barrier").stdout.strip() == "no barrier is waited at"
