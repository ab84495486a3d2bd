"""Jobs: every exec and run is one (J12), with ranks across its nodes; the CORRAL_*
variables its processes get; jobs, pid --job, wait, kill, sKill and log on a job; a node
lost while waiting; bad job names. Real master and client processes."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from common.errors import CorralError, ErrorCode
from common.states import NodeState
from master.api import MasterAPI
from master.console import CorralConsole
from master.front.results import NodeView
from tests.harness import PATIENCE, wait_until


@pytest.fixture
def nodes(master: MasterAPI, spawn_client) -> list:  # type: ignore[no-untyped-def]
    clients = [spawn_client(name, master.address) for name in ("n1", "n2")]
    assert master.wait_ready(2, timeout=30).reached
    return clients


@pytest.fixture
def console(master: MasterAPI) -> CorralConsole:
    return CorralConsole(master, interactive=False, stdout=io.StringIO())


def run_line(console: CorralConsole, line: str) -> tuple[str, int]:
    console.stdout.truncate(0)  # type: ignore[attr-defined]
    console.stdout.seek(0)  # type: ignore[attr-defined]
    console.exit_code = 0
    console.onecmd_plus_hooks(line)
    return console.stdout.getvalue(), console.exit_code  # type: ignore[attr-defined]


ENV_DUMP = 'echo "$CORRAL_NODE $CORRAL_JOB $CORRAL_RANK $CORRAL_SIZE $CORRAL_REF"'


@pytest.mark.slow
def test_exec_is_a_job_with_ranks_and_its_variables(master: MasterAPI, nodes) -> None:
    group = master.exec("n[1-2]", ["sh", "-c", ENV_DUMP], count=2)
    assert group.ok, group.errors
    infos = [info for name in ("n1", "n2") for info in group.results[name]]
    (job,) = {info.job for info in infos}
    assert job.startswith("J")
    assert [info.rank for info in infos] == [0, 1, 2, 3]
    results = master.wait([job], timeout=30)
    assert [r.rank for r in results] == [0, 1, 2, 3] and all(r.ok for r in results)
    lines = sorted(master.log(r.ref).data.decode().strip() for r in results)
    assert lines == [f"n1 {job} 0 4 {job}.0", f"n1 {job} 1 4 {job}.1",
                     f"n2 {job} 2 4 {job}.2", f"n2 {job} 3 4 {job}.3"]


def test_run_is_a_job_too(master: MasterAPI, nodes) -> None:
    group = master.run(None, ENV_DUMP)
    jobs = {result.job for result in group.results.values()}
    (job,) = jobs
    assert group.results["n2"].stdout.decode().strip() == f"n2 {job} 1 2 {job}.1"
    (view,) = [v for v in master.jobs() if v.job == job]
    assert (view.origin, view.size, view.ended, view.worst) == ("run", 2, 2, 0)


def test_job_variables_cannot_be_forged(master: MasterAPI, spawn_client,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # A client started inside a job (its own environment holds them) passes none on.
    monkeypatch.setenv("CORRAL_JOB", "J999999")
    monkeypatch.setenv("CORRAL_SOCKET", "/tmp/forged.sock")
    client = spawn_client("n1", master.address)
    assert master.wait_ready(1, timeout=30).reached
    ran = master.run("n1", 'echo "[$CORRAL_JOB] [${CORRAL_SOCKET-unset}]"').results["n1"]
    # CORRAL_SOCKET is this client's own job socket, never the one it inherited.
    assert ran.stdout.decode().strip() == f"[{ran.job}] [{client.state_dir / 'job.sock'}]"
    for name in ("CORRAL_JOB", "CORRAL_RANK", "CORRAL_SOCKET"):
        with pytest.raises(CorralError, match=f"{name} is set by the client"):
            master.exec("n1", ["true"], env={name: "forged"})


def test_jobs_pid_and_wait_with_status(master: MasterAPI, nodes, console: CorralConsole
                                       ) -> None:
    started = master.exec(None, ["sh", "-c", 'read x; exit "$CORRAL_RANK"'], stdin=b"go\n")
    job = started.results["n1"][0].job
    text, status = run_line(console, f"wait {job}")
    assert status == 1, text  # rank 1 exited 1: the worst
    assert text.splitlines()[-1] == "status 1"
    assert "exited 1" in text and "exited 0" in text
    text, status = run_line(console, f"pid --job {job}.1")
    assert status == 0 and "exited 1" in text and "exited 0" not in text
    text, status = run_line(console, "jobs")
    row = next(line for line in text.splitlines() if line.startswith(job + " "))
    assert row.split()[-5:-1] == ["0", "2", "0", "1"]  # running, ended, lost, worst


def test_bad_job_names(master: MasterAPI, nodes, console: CorralConsole,
                      capsys: pytest.CaptureFixture[str]) -> None:
    for line, message in [("wait J999", "unknown job J999"), ("kill J999", "unknown job"),
                          ("log J999.0", "unknown job"), ("wait J", "bad job 'J'"),
                          ("wait Jx", "bad job 'Jx'"), ("sKill J1.", "bad job"),
                          ("pid --job 12", "bad job"), ("wait J0", "job numbers are J1 to")]:
        capsys.readouterr()
        _text, status = run_line(console, line)
        assert status == 1, line
        lines = capsys.readouterr().err.strip().splitlines()
        if not line.startswith("pid"):  # (argparse's errors come after the usage)
            assert len(lines) == 1, (line, lines)
        assert message in " ".join(lines), line
    group = master.exec("n1", ["true"])
    job = group.results["n1"][0].job
    with pytest.raises(CorralError, match=f"{job} has no rank 5"):
        master.wait([f"{job}.5"])
    with pytest.raises(CorralError, match="unknown job J999"):
        master.job_members("J999")


def test_wait_on_a_job_whose_node_is_lost(master: MasterAPI, nodes) -> None:
    group = master.exec(None, ["sh", "-c", 'read x; [ "$CORRAL_RANK" = 0 ] || sleep 60'],
                        stdin=b"go\n")
    job = group.results["n1"][0].job
    stray = group.results["n2"][0].pid
    outcome: list = []
    waiter = threading.Thread(target=lambda: outcome.append(master.wait([job])))
    waiter.start()
    try:
        wait_until(lambda: master.processes("n1").results["n1"][0].ended_state,
                   what="rank 0 to end")
        nodes[1].signal(signal.SIGKILL)  # n2 goes GONE; its sleep runs on, unwatched
        waiter.join(timeout=30)
        assert not waiter.is_alive(), "wait hung on a lost node"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(stray, signal.SIGKILL)
    (results,) = outcome
    assert results[0].ok and results[0].rank == 0
    assert results[1].info is None and results[1].rank == 1
    # (The node may go while its table is being read, or while its process is waited on.)
    assert results[1].error.startswith("lost: n2")
    assert results[1].status == 255
    # Once lost, the node's processes are reported as such straight away.
    again = master.wait([job], timeout=5)
    assert again[1].error.startswith("lost: n2 not connected")


@pytest.mark.slow
def test_jobs_survive_a_master_restart(spawn_master, spawn_client, tmp_path: Path) -> None:
    from tests.test_service import control_of, corral

    master = spawn_master(extra=["--no-console"])
    spawn_client("n1", master.address)
    control = control_of(master)
    assert corral(control, "list", "--wait", "1", "--timeout", "30").returncode == 0
    started = corral(control, "exec", "--", "sh", "-c", "sleep 1; exit 4")
    assert started.returncode == 0, started.stderr
    assert "job J1: 1 process" in started.stdout
    assert corral(control, "setenv", "STAGE=two").returncode == 0
    master.stop()
    master = spawn_master(extra=["--no-console"], port=master.port)
    assert corral(control, "list", "--wait", "1", "--timeout", "30").returncode == 0
    waited = corral(control, "wait", "J1")
    assert waited.returncode == 4, waited.stderr
    assert "exited 4" in waited.stdout
    listed = corral(control, "jobs")
    assert listed.stdout.splitlines()[-1].split()[:2] == ["J1", "exec"]
    assert corral(control, "exec", "--", "true").stdout.count("job J2") == 1
    assert corral(control, "env").stdout == "STAGE=two\n"
    ran = corral(control, "--json", "run", "--", "echo", "$STAGE $CORRAL_JOB")
    assert json.loads(ran.stdout)["result"]["results"]["n1"]["stdout"] == "two J3\n"


@pytest.mark.slow
def test_kill_skill_and_log_a_job(master: MasterAPI, nodes, console: CorralConsole,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    script = 'echo "first of $CORRAL_REF"; printf "no newline"; [ "$CORRAL_RANK" = 1 ] || sleep 60'
    group = master.exec(None, ["sh", "-c", script], count=2)
    job = group.results["n1"][0].job
    refs = [f"{name}:{info.pid}" for name in ("n1", "n2") for info in group.results[name]]
    wait_until(lambda: master.processes("n1").results["n1"][1].ended_state, what="rank 1")
    text, status = run_line(console, f"log {job}")
    assert status == 0, text
    assert text.splitlines() == [line for ref, rank in zip(refs, range(4), strict=True)
                                 for line in (f"{ref}: first of {job}.{rank}",
                                              f"{ref}: no newline")]
    text, status = run_line(console, f"log -n 1 {job}.2")
    assert (text, status) == ("no newline", 0)
    capsys.readouterr()
    _text, status = run_line(console, f"log -f {job}")
    assert status == 1
    assert f"log -f and --save take one process: give its NODE:PID or {job}.RANK" in (
        capsys.readouterr().err)
    outcomes = master.signal([job], signal.SIGINT)
    assert [o.ref for o in outcomes] == refs and all(o.ok for o in outcomes), outcomes
    assert "already ended" in outcomes[1].message and outcomes[0].message == "killed SIGINT"
    results = master.wait([job], timeout=30)
    assert [r.status for r in results] == [130, 0, 130, 130]
    later = master.exec("n1", ["sleep", "60"])
    other = later.results["n1"][0].job
    text, status = run_line(console, f"sKill {other}")
    assert status == 0 and "killed SIGKILL" in text


def test_line_prefixes_survive_any_chunking() -> None:
    from master.front.joblog import LinePrefixer

    data = b"one\ntwo\n\nthree"
    for cut in range(len(data) + 1):
        prefixer = LinePrefixer(b"n1:7: ")
        out = prefixer.feed(data[:cut]) + prefixer.feed(data[cut:]) + prefixer.close()
        assert out == b"n1:7: one\nn1:7: two\nn1:7: \nn1:7: three\n", cut


def test_global_environment(master: MasterAPI, nodes, console: CorralConsole) -> None:
    assert master.env() == {}
    text, status = run_line(console, 'setenv COLOR=teal "SHAPE=round one" EMPTY=')
    assert (text, status) == ("", 0)
    assert run_line(console, "env") == ("COLOR=teal\nEMPTY=\nSHAPE=round one\n", 0)
    ran = master.run("n1", 'echo "$COLOR/$SHAPE/${EMPTY-unset}"').results["n1"]
    assert ran.stdout == b"teal/round one/\n"
    started = master.exec("n2", ["sh", "-c", 'echo "$COLOR $SHAPE"'], env={"COLOR": "red"})
    ref = f"n2:{started.results['n2'][0].pid}"
    assert master.wait([ref], timeout=30)[0].ok
    assert master.log(ref).data == b"red round one\n"  # the command's own --env wins
    assert master.unsetenv(["SHAPE", "NEVER_SET"]) == {"COLOR": "teal", "EMPTY": ""}
    assert master.run("n1", 'echo "${SHAPE-unset}"').results["n1"].stdout == b"unset\n"


@pytest.mark.parametrize(("pairs", "message"), [
    ({"A=B": "x"}, "bad environment name 'A=B'"),
    ({"1ABC": "x"}, "bad environment name '1ABC'"),
    ({"": "x"}, "bad environment name ''"),
    ({"A\0B": "x"}, "holds a NUL byte"),
    ({"NUL": "x\0y"}, "the value of NUL holds a NUL byte"),
    ({"CORRAL_RANK": "7"}, "CORRAL_RANK is set by the client"),
    ({"BIG": "x" * (64 * 1024 + 1)}, "longer than 65536 bytes"),
    ({f"V{i}": "x" * 60_000 for i in range(20)}, "more than 1,048,576"),
])
def test_bad_environment_entries_change_nothing(master: MasterAPI, pairs: dict[str, str],
                                                message: str) -> None:
    master.setenv({"KEPT": "1"})
    with pytest.raises(CorralError, match=message):
        master.setenv({"FIRST": "fine", **pairs})
    assert master.env() == {"KEPT": "1"}


def test_bad_environment_from_the_command_line(master: MasterAPI, console: CorralConsole,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    for line, message in [("setenv NOEQUALS", "expected K=V"),
                          ("setenv A-B=1", "bad environment name 'A-B'"),
                          ("exec --env CORRAL_JOB=J1 -- true", "CORRAL_JOB is set by the"),
                          ("unsetenv CORRAL_REF", "CORRAL_REF is set by the client")]:
        capsys.readouterr()
        _text, status = run_line(console, line)
        assert status == 1, line
        assert message in " ".join(capsys.readouterr().err.split()), line
    assert master.env() == {}


def view(name: str, load: float | None, mem: int | None, rtt: float | None,
         state: str = "READY") -> NodeView:
    return NodeView(name=name, node_id=name, host="h", address="a", state=NodeState(state),
                    since_heartbeat=0.1, rtt_ms=rtt,
                    load=None if load is None else (load, load, load), cpu_percent=1.0,
                    mem_available=mem, mem_total=mem and 2 * mem, disk_free=mem,
                    processes=0)


def test_select_ranks_best_first_and_puts_unknown_figures_last() -> None:
    from master.front.nodepick import pick

    nodes = [view("n10", 0.5, 100, 3.0), view("n2", 2.0, 300, 1.0), view("n1", None, None, None),
             view("n3", 0.5, 200, 2.0), view("n4", 0.1, 999, 0.5, state="GONE")]
    names = {by: [n.name for n in pick(nodes, by, "READY")]
             for by in ("load", "mem", "disk", "rtt", None)}
    assert names == {"load": ["n3", "n10", "n2", "n1"], "mem": ["n2", "n3", "n10", "n1"],
                     "disk": ["n2", "n3", "n10", "n1"], "rtt": ["n2", "n3", "n10", "n1"],
                     None: ["n1", "n2", "n3", "n10"]}
    assert [n.name for n in pick(nodes, "load", "GONE")] == ["n4"]


def test_select_ranks_stale_figures_after_live_nodes() -> None:
    """A GONE node's figures are what it said before it went, a MISSING node's some
    heartbeats old: with --state any, each comes after every live node, however good its
    figures (even after a live node that has none yet)."""
    from master.front.nodepick import pick

    nodes = [view("n10", 0.5, 100, 3.0), view("n2", 2.0, 300, 1.0), view("n1", None, None, None),
             view("n3", 0.5, 200, 2.0), view("n4", 0.1, 999, 0.5, state="GONE"),
             view("n5", 0.2, 998, 0.6, state="MISSING"), view("n6", 0.0, 5, 0.1, state="GONE")]
    ranked = {by: [n.name for n in pick(nodes, by, "any")] for by in ("load", "mem", "rtt")}
    assert ranked == {"load": ["n3", "n10", "n2", "n1", "n5", "n6", "n4"],
                      "mem": ["n2", "n3", "n10", "n1", "n5", "n4", "n6"],
                      "rtt": ["n2", "n3", "n10", "n1", "n5", "n6", "n4"]}


@pytest.mark.slow
def test_select_from_the_cli(spawn_master, spawn_client) -> None:
    from tests.test_service import control_of, corral

    master = spawn_master(extra=["--no-console"])
    for name in ("n1", "n2"):
        spawn_client(name, master.address)
    control = control_of(master)
    assert corral(control, "list", "--wait", "2", "--timeout", "30").returncode == 0
    best = corral(control, "select", "--by", "rtt", "-n", "1")
    assert best.returncode == 0 and best.stdout.strip() in ("n1", "n2")
    both = corral(control, "select", "--by", "mem")
    assert sorted(both.stdout.strip().split(",")) == ["n1", "n2"]
    assert corral(control, "select", "--count").stdout == "2\n"
    assert corral(control, "select", "--count", "--state", "gone").stdout == "0\n"
    started = corral(control, "exec", "-w", both.stdout.strip(), "--", "sh", "-c",
                     "echo $CORRAL_REF")
    assert started.returncode == 0 and "job J1: 2 processes" in started.stdout
    assert corral(control, "wait", "J1").returncode == 0
    logged = corral(control, "log", "J1")
    assert [line.split(": ")[1] for line in logged.stdout.splitlines()] == ["J1.0", "J1.1"]
    as_json = [json.loads(line) for line in corral(control, "--json", "log", "J1").stdout
               .splitlines()]
    assert as_json[-1]["result"]["ref"] == "J1" and as_json[-1]["result"]["ended"] is True
    too_many = corral(control, "select", "--by", "load", "-n", "3")
    assert too_many.returncode == 1 and len(too_many.stdout.strip().split(",")) == 2
    assert too_many.stderr == "error: only 2 READY nodes, 3 wanted\n"
    none = corral(control, "select", "--state", "MISSING")
    assert (none.returncode, none.stdout, none.stderr) == (1, "", "error: no MISSING nodes\n")
    for words, message in ((["--by", "bogus"], "invalid choice: 'bogus'"),
                           (["-n", "0"], "must be at least 1"),
                           (["--state", "asleep"], "invalid choice: 'ASLEEP'")):
        bad = corral(control, "select", *words)
        assert bad.returncode == 2 and message in bad.stderr, words


@pytest.mark.slow
def test_select_any_puts_a_gone_node_last(spawn_master, spawn_client) -> None:
    from tests.test_service import control_of, corral

    master = spawn_master(extra=["--no-console"])
    gone, _live = (spawn_client(name, master.address) for name in ("n1", "n2"))
    control = control_of(master)
    assert corral(control, "list", "--wait", "2", "--timeout", "30").returncode == 0
    def have_figures() -> bool:
        nodes = json.loads(corral(control, "--json", "list").stdout)["result"]
        return all(node["rtt_ms"] is not None and node["disk_free"] is not None
                   for node in nodes)

    wait_until(have_figures, what="both nodes' figures")
    gone.stop()
    wait_until(lambda: corral(control, "select", "--state", "GONE").stdout == "n1\n",
               what="n1 GONE")
    for by in ("rtt", "load", "mem", "disk"):
        ranked = corral(control, "select", "--state", "any", "--by", by)
        assert (ranked.returncode, ranked.stdout) == (0, "n2,n1\n"), by


def test_placeholders_rule() -> None:
    from common.placeholders import expand

    cases = {"?HOST": "n7", "?RANK": "3", "out-?HOST-?RANK.txt": "out-n7-3.txt",
             "??HOST": "?HOST", "???HOST": "??HOST", "??RANK?": "?RANK?", "file?.txt": "file?.txt",
             "?host": "?host", "?HOSTS": "n7S", "": ""}
    for text, expanded in cases.items():
        assert expand(text, "n7", 3) == expanded, text


def test_host_and_rank_in_commands_and_paths(master: MasterAPI, nodes, tmp_path: Path) -> None:
    group = master.exec(None, ["sh", "-c", 'echo "$0 $1 $2"', "?HOST", "r?RANK", "??HOST"],
                        count=2)
    refs = [f"{name}:{info.pid}" for name in ("n1", "n2") for info in group.results[name]]
    assert all(r.ok for r in master.wait(refs, timeout=30))
    assert [master.log(ref).data for ref in refs] == [
        b"n1 r0 ?HOST\n", b"n1 r1 ?HOST\n", b"n2 r2 ?HOST\n", b"n2 r3 ?HOST\n"]
    ran = master.run(None, "echo ?HOST-?RANK > made-?HOST.txt; cat made-n?RANK.txt")
    assert ran.results["n2"].stdout == b""  # n2's rank is 1: made-n1.txt is n1's
    assert (nodes[0].workdir / "made-n1.txt").read_text() == "n1-0\n"
    assert (nodes[1].workdir / "made-n2.txt").read_text() == "n2-1\n"

    source = tmp_path / "payload"
    source.write_text("data\n")
    assert master.copy(None, [str(source)], "in-?HOST-?RANK").ok
    assert (nodes[1].workdir / "in-n2-1").read_text() == "data\n"
    pulled = master.pull(None, ["in-?HOST-?RANK"], str(tmp_path / "back"))
    assert pulled.ok and (tmp_path / "back" / "n2" / "in-n2-1").read_text() == "data\n"
    assert master.remove(None, ["in-?HOST-?RANK", "made-?HOST.txt"]).ok
    assert not (nodes[0].workdir / "in-n1-0").exists()
    assert not (nodes[0].workdir / "made-n1.txt").exists()
    # A placeholder cannot take a path out of a node's sandbox.
    escaped = master.copy(None, [str(source)], "../?HOST")
    assert sorted(escaped.errors) == ["n1", "n2"]
    assert "outside" in escaped.errors["n1"].message
    assert not (nodes[0].workdir.parent / "n1").exists()
    assert not any(o.ok for o in master.remove("n1", ["/etc/?HOST"]).results["n1"])


def test_script_runs_as_one_job_and_leaves_nothing(master: MasterAPI, nodes,
                                                   console: CorralConsole,
                                                   tmp_path: Path) -> None:
    script = tmp_path / "probe.sh"
    script.write_text('#!/bin/sh\necho "$CORRAL_REF $1 $2 in $(pwd)"\n'
                      '[ "$CORRAL_RANK" = 0 ] || exit 5\n')
    script.chmod(0o644)  # not executable here: it lands mode 0700 all the same
    group = master.script(None, str(script), ["?HOST", "two words"])
    job = group.results["n1"].job
    assert group.results["n1"].stdout.decode() == (
        f"{job}.0 n1 two words in {nodes[0].workdir.resolve()}\n")
    assert group.results["n2"].exit_code == 5
    (view,) = [v for v in master.jobs() if v.job == job]
    assert (view.origin, view.size, view.worst) == ("script", 2, 5)
    for client in nodes:
        assert list((client.workdir / ".corral" / "scripts").iterdir()) == []
    text, status = run_line(console, f"script -w n1 {script} x")
    assert status == 0 and "[n1] exit 0" in text and "1 succeeded, 0 failed, 1 total" in text


@pytest.mark.slow
def test_a_script_left_on_a_node_that_was_away_is_removed_when_it_is_back(
        master: MasterAPI, spawn_client, tmp_path: Path, master_log: Path) -> None:
    """The node goes GONE while its script runs, so the script cannot be removed when the
    job ends; once the node is READY again, the master removes it."""
    client = spawn_client("n1", master.address)
    assert master.wait_ready(1, timeout=30).reached
    script = tmp_path / "long.sh"
    script.write_text("#!/bin/sh\ntouch started\nexec sleep 300\n")
    outcome: list[Any] = []
    runner = threading.Thread(target=lambda: outcome.append(
        master.script("n1", str(script), [], timeout=120)))
    runner.start()
    scripts = client.workdir / ".corral" / "scripts"
    try:
        wait_until((client.workdir / "started").exists, what="the script running")
        client.signal(signal.SIGSTOP)  # heartbeats stop: GONE, and the job's wait ends
        runner.join(PATIENCE)
        assert "n1" in outcome[0].errors, outcome
        assert len(list(scripts.iterdir())) == 1  # could not be removed: n1 was away
    finally:
        client.signal(signal.SIGCONT)
        runner.join(PATIENCE)
    wait_until(lambda: not list(scripts.iterdir()), what="the script removed")
    assert "n1: removed the script .corral/scripts/" in master_log.read_text()
    master.signal_all("n1", signal.SIGKILL)


@pytest.mark.slow
def test_a_client_sweeps_scripts_left_from_before(master: MasterAPI, spawn_client,
                                                  tmp_path: Path) -> None:
    """A master restarted meanwhile no longer knows them: the client removes them at its
    start, and nothing outside its work folder even through a symbolic link."""
    client = spawn_client("n1", master.address)
    assert master.wait_ready(1, timeout=30).reached
    client.stop()
    scripts = client.workdir / ".corral" / "scripts"
    scripts.mkdir(parents=True, exist_ok=True)
    (scripts / "0123456789ab-job.sh").write_text("echo left\n")
    (scripts / "mine.txt").write_text("not a script of corral's\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "0123456789ab-x.sh").write_text("kept\n")
    other = spawn_client("n2", master.address)
    other.stop()
    (other.workdir / ".corral").mkdir(parents=True, exist_ok=True)
    (other.workdir / ".corral" / "scripts").symlink_to(elsewhere)
    client.start()
    other.start()
    assert master.wait_ready(2, timeout=30).reached
    assert sorted(p.name for p in scripts.iterdir()) == ["mine.txt"]
    assert "removed 1 script(s) left in" in client.log_text()
    assert (elsewhere / "0123456789ab-x.sh").exists()


def test_script_bad_input(master: MasterAPI, nodes, console: CorralConsole, tmp_path: Path,
                          spawn_client, capsys: pytest.CaptureFixture[str]) -> None:
    for line, message in [(f"script {tmp_path / 'missing.sh'}", "missing.sh: not a file"),
                          (f"script {tmp_path}", "not a file"),
                          ("script -w n9 /bin/true", "unknown node: n9"),
                          ("script", "the following arguments are required: LOCAL_FILE")]:
        capsys.readouterr()
        _text, status = run_line(console, line)
        assert status == 1, line
        assert message in " ".join(capsys.readouterr().err.split()), line
    listed = spawn_client("lab", master.address, extra=["--allow", "true"])
    assert master.wait_ready(3, timeout=30).reached
    script = tmp_path / "s.sh"
    script.write_text("#!/bin/sh\ntrue\n")
    group = master.script("lab", str(script), [])
    assert "not allowed" in group.errors["lab"].message
    assert list((listed.workdir / ".corral" / "scripts").iterdir()) == []


def test_job_store_keeps_numbers_and_the_newest(tmp_path: Path) -> None:
    from master.jobs import FILE_NAME, JobStore, UnknownJob

    store = JobStore(tmp_path, keep=3)
    jobs = [store.create(f"cmd {i}", "exec", ["n1", "n2"], 2) for i in range(5)]
    store.settle(jobs[-1], {0: 11, 1: 12},
                 {"n2": CorralError("no reply within 10 s", ErrorCode.NO_REPLY)})
    assert [j.name for j in store.jobs()] == ["J3", "J4", "J5"]
    assert jobs[-1].ranks("n2") == range(2, 4) and jobs[-1].size == 4
    store.close()
    again = JobStore(tmp_path, keep=3)
    assert [j.name for j in again.jobs()] == ["J3", "J4", "J5"]
    job, rank = again.get("J5.3")
    assert (job.pids, job.errors, rank) == ({0: 11, 1: 12}, {"n2": "no reply within 10 s"}, 3)
    assert again.create("next", "run", ["n1"], 1).name == "J6"  # never J1 again
    with pytest.raises(UnknownJob, match=r"unknown job J1 \(jobs known: J4 to J6\)"):
        again.get("J1")
    again.close()
    (tmp_path / FILE_NAME).write_text('{"seq": 1, "command": "x"\nnot json\n')
    assert JobStore(tmp_path).jobs() == []
    assert (tmp_path / (FILE_NAME + ".corrupt")).exists()


@pytest.mark.slow
def test_a_restarted_client_still_knows_its_job_processes(master: MasterAPI, spawn_client
                                                          ) -> None:
    client = spawn_client("n1", master.address)
    assert master.wait_ready(1, timeout=30).reached
    group = master.exec("n1", ["sleep", "60"], count=2)
    job = group.results["n1"][0].job
    client.stop()  # SIGTERM: its processes run on
    wait_until(lambda: master.nodes()[0].state is NodeState.GONE, what="n1 GONE")
    assert master.jobs()[-1].lost == 2
    spawn_client("n1", master.address)
    assert master.wait_ready(1, timeout=30).reached
    found = master.processes(None, job=f"{job}.1").results["n1"]
    assert [(p.rank, p.describe()) for p in found] == [(1, "running")]
    assert all(o.ok for o in master.signal([job], signal.SIGKILL))
    results = master.wait([job], timeout=30)
    # Adopted after the restart, they are no longer the client's children: how they ended
    # is not known.
    assert [(r.rank, r.status) for r in results] == [(0, 255), (1, 255)]


def test_tab_completes_jobs(master: MasterAPI, nodes, console: CorralConsole) -> None:
    from tests.test_processes import complete

    first = master.exec("n1", ["true"]).results["n1"][0].job
    second = master.exec("n2", ["true"]).results["n2"][0].job
    for line in ("wait J", "kill J", "sKill J", "log J", "pid --job J"):
        assert complete(console, line) == sorted([first, second]), line
    assert complete(console, "forget J") == []  # forget takes no job


@pytest.mark.slow
def test_the_control_socket_refuses_arguments_of_the_wrong_shape(spawn_master) -> None:
    from master.front.control import SocketBackend
    from tests.test_service import control_of

    backend = SocketBackend(control_of(spawn_master(extra=["--no-console"])))
    for op, args in [("setenv", {"pairs": "A=1"}), ("setenv", {"pairs": {"A": 1}}),
                     ("unsetenv", {"names": "A"}), ("job_members", {"job": 12}),
                     ("script", {"nodeset": None, "local_file": 3, "args": [],
                                 "timeout": 1.0}),
                     ("wait", {"refs": ["J1"], "timeout": None})]:
        with pytest.raises(CorralError) as caught:
            backend.call(op, args)
        assert caught.value.code in (ErrorCode.BAD_REQUEST, ErrorCode.NOT_FOUND), (op, caught)
    assert backend.call("env", {}) == {}
