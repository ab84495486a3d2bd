"""Processes on real clients, through the master's API and console: exec, pid, kill, sKill,
getrusage, log, wait and shell commands. Every test runs with both spawn methods."""

from __future__ import annotations

import io
import logging
import threading
from pathlib import Path

import psutil
import pytest

from common.procs import ProcInfo
from master.api import MasterAPI
from master.console import CorralConsole
from master.events import Event, ProcessEvent
from master.server import MasterConfig
from tests.conftest import FAST_HEARTBEAT, TOKEN
from tests.harness import wait_until


@pytest.fixture
def nodes(master: MasterAPI, spawn_client, spawn_method: str) -> list:
    clients = [spawn_client(name, master.address, extra=["--spawn", spawn_method])
               for name in ("n1", "n2", "n3")]
    assert master.wait_ready(3, timeout=30).reached
    return clients


@pytest.fixture
def console(master: MasterAPI) -> CorralConsole:
    return CorralConsole(master, interactive=False, stdout=io.StringIO())


def only(group, node: str = "n1") -> ProcInfo:  # type: ignore[no-untyped-def]
    assert group.ok, group.errors
    (info,) = group.results[node]
    return info


def state_of(master: MasterAPI, ref: str) -> str:
    node, pid = ref.split(":")
    procs = master.processes(node).results[node]
    return next(p.describe() for p in procs if p.pid == int(pid))


def test_exit_code_comes_back(master: MasterAPI, nodes) -> None:
    info = only(master.exec("n1", ["sh", "-c", "exit 3"]))
    ref = f"n1:{info.pid}"
    wait_until(lambda: state_of(master, ref) == "exited 3", what="exited 3")


@pytest.mark.slow
def test_cpu_burner_shows_user_time(master: MasterAPI, nodes) -> None:
    burn = "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"
    info = only(master.exec("n2", ["sh", "-c", burn], ), "n2")
    results = master.wait([f"n2:{info.pid}"], timeout=60)
    assert results[0].ok, results
    report = master.rusage("n2").results["n2"]
    row = next(p for p in report.processes if p.pid == info.pid)
    assert row.rusage is not None and row.rusage["ru_utime"] > 0
    assert report.children["ru_utime"] >= row.rusage["ru_utime"] > 0


def test_running_process_shows_live_usage(master: MasterAPI, nodes) -> None:
    info = only(master.exec("n1", ["sleep", "30"]))
    row = next(p for p in master.rusage("n1").results["n1"].processes if p.pid == info.pid)
    assert row.describe() == "running" and row.rss and row.rss > 0
    assert row.cpu_time is not None


@pytest.mark.parametrize(("command", "signum", "expected"),
                         [("kill", 2, "killed SIGINT"), ("sKill", 9, "killed SIGKILL")])
@pytest.mark.slow
def test_kill_and_skill(console: CorralConsole, master: MasterAPI, nodes, command: str,
                        signum: int, expected: str) -> None:
    info = only(master.exec("n1", ["sleep", "60"]))
    ref = f"n1:{info.pid}"
    console.onecmd_plus_hooks(f"{command} {ref}")
    assert console.exit_code == 0
    assert [(o.ref, o.ok) for o in console.last_result] == [(ref, True)]
    wait_until(lambda: state_of(master, ref) == expected, what=expected)
    # Signalling it again is refused: it has ended.
    outcome = master.signal([ref], signum)[0]
    assert not outcome.ok and "already ended" in outcome.message


def test_kill_all_on_a_node_set(master: MasterAPI, nodes) -> None:
    started = master.exec("n[1-2]", ["sleep", "60"])
    assert started.ok
    group = master.signal_all("n[1-2]", 15)
    assert sorted(o.ref for name in group.succeeded for o in group.results[name]) == sorted(
        f"{name}:{info.pid}" for name, (info,) in started.results.items())
    for name, (info,) in started.results.items():
        wait_until(lambda n=name, i=info: state_of(master, f"{n}:{i.pid}") == "killed SIGTERM")


@pytest.mark.slow
def test_missing_program_is_a_spawn_error(console: CorralConsole, master: MasterAPI,
                                          nodes, capsys) -> None:
    console.onecmd_plus_hooks("exec -w n1 -- no-such-program-xyz")
    assert console.exit_code == 1
    (info,) = console.last_result.results["n1"]
    assert info.describe() == "spawn failed: No such file or directory: no-such-program-xyz"
    assert "error: No such file or directory" in capsys.readouterr().err
    assert any(p.describe().startswith("spawn failed") for p in
               master.processes("n1").results["n1"])


def test_foreign_pids_are_refused(master: MasterAPI, nodes) -> None:
    outsider = psutil.Process(nodes[0].pid)  # the client itself: alive, not its child
    outcomes = master.signal(["n1:1", f"n1:{outsider.pid}"], 9)
    assert [o.ok for o in outcomes] == [False, False]
    assert all("was not started by this client" in o.message for o in outcomes)
    assert outsider.is_running()


def test_unknown_node_is_a_clear_error(console: CorralConsole, nodes, capsys) -> None:
    console.onecmd_plus_hooks("pid -w n9")
    assert console.exit_code == 1
    assert "unknown node: n9" in capsys.readouterr().err


@pytest.mark.slow
def test_many_short_processes_leave_no_zombie(master: MasterAPI, nodes) -> None:
    client_pid = nodes[0].pid
    refs = []
    for _ in range(300):
        info = only(master.exec("n1", ["true"]))
        refs.append(f"n1:{info.pid}")
    results = master.wait(refs, timeout=120)
    assert all(r.ok for r in results), [r for r in results if not r.ok][:3]
    assert len(master.processes("n1").results["n1"]) == 300

    def zombies() -> list[int]:
        return [c.pid for c in psutil.Process(client_pid).children()
                if c.status() == psutil.STATUS_ZOMBIE]

    wait_until(lambda: not zombies(), what="no zombies")
    assert not psutil.Process(client_pid).children()


def test_log_keeps_stdout_and_stderr_in_order(console: CorralConsole, master: MasterAPI,
                                              nodes) -> None:
    script = "for i in 1 2 3; do echo out$i; echo err$i >&2; done"
    info = only(master.exec("n1", ["sh", "-c", script]))
    ref = f"n1:{info.pid}"
    master.wait([ref], timeout=30)
    console.onecmd_plus_hooks(f"log {ref}")
    assert console.last_result.tail.decode().splitlines() == [
        "out1", "err1", "out2", "err2", "out3", "err3"]
    console.onecmd_plus_hooks(f"log {ref} -n 2")
    assert console.last_result.tail.decode().splitlines() == ["out3", "err3"]


@pytest.mark.slow
def test_log_follow_until_the_process_ends(console: CorralConsole, master: MasterAPI,
                                           nodes) -> None:
    script = "for i in 1 2 3 4 5; do echo tick$i; sleep 0.1; done"
    info = only(master.exec("n1", ["sh", "-c", script]))
    console.onecmd_plus_hooks(f"log n1:{info.pid} -f")
    assert console.last_result.tail.decode().splitlines() == [f"tick{i}" for i in range(1, 6)]


def test_exec_options(master: MasterAPI, nodes, tmp_path: Path) -> None:
    (nodes[0].workdir / "sub").mkdir()
    info = only(master.exec("n1", ["sh", "-c", 'pwd; echo "$COLOR"; cat'], cwd="sub",
                            env={"COLOR": "teal"}, stdin=b"from the master\n"))
    ref = f"n1:{info.pid}"
    assert master.wait([ref], timeout=30)[0].ok
    assert master.log(ref).data.decode().splitlines() == [
        str((nodes[0].workdir / "sub").resolve()), "teal", "from the master"]


def test_run_on_three_nodes(console: CorralConsole, nodes) -> None:
    console.onecmd_plus_hooks("echo hi")
    text = console.stdout.getvalue()  # type: ignore[attr-defined]
    assert text.splitlines()[-1] == "3 succeeded, 0 failed, 3 total"
    for name in ("n1", "n2", "n3"):
        assert f"[{name}] exit 0\nhi\n" in text
    assert console.exit_code == 0


@pytest.mark.slow
def test_run_reports_failures_and_stderr(console: CorralConsole, nodes) -> None:
    console.onecmd_plus_hooks("run -w n[1-2] -- sh -c 'echo oops >&2; test $(hostname) = nope'")
    text = console.stdout.getvalue()  # type: ignore[attr-defined]
    assert "[n1] exit 1" in text and "stderr: oops" in text
    assert text.splitlines()[-1] == "0 succeeded, 2 failed, 2 total; failed: n[1-2]"
    assert console.exit_code == 1


@pytest.mark.slow
def test_run_timeout_kills_the_command(master: MasterAPI, nodes) -> None:
    group = master.run("n1", "echo started; sleep 30", timeout=0.5)
    result = group.results["n1"]
    assert result.timed_out and not result.ok and result.stdout == b"started\n"


@pytest.mark.slow
def test_wait_states_and_status(console: CorralConsole, master: MasterAPI, nodes) -> None:
    good = only(master.exec("n1", ["true"]))
    bad = only(master.exec("n2", ["sh", "-c", "exit 4"]), "n2")
    console.onecmd_plus_hooks(f"wait n1:{good.pid}")
    assert console.exit_code == 0
    assert [r.info.describe() for r in console.last_result] == ["exited 0"]
    console.onecmd_plus_hooks(f"wait n1:{good.pid} n2:{bad.pid} --timeout 30")
    assert [r.info.describe() for r in console.last_result] == ["exited 0", "exited 4"]
    assert console.exit_code == 1


@pytest.mark.slow
def test_wait_times_out_on_a_running_process(master: MasterAPI, nodes) -> None:
    info = only(master.exec("n1", ["sleep", "30"]))
    result = master.wait([f"n1:{info.pid}"], timeout=0.3)[0]
    assert not result.ok and result.error == "still running at timeout"


def test_exit_while_master_is_down_is_reported_once(tmp_path: Path, spawn_client,
                                                    spawn_method: str) -> None:
    events: list[ProcessEvent] = []
    seen = threading.Condition()

    def record(event: Event) -> None:
        if isinstance(event, ProcessEvent):
            with seen:
                events.append(event)
                seen.notify_all()

    handler = logging.FileHandler(tmp_path / "master.log")
    logging.getLogger("corral").addHandler(handler)
    config = MasterConfig(port=0, heartbeat=FAST_HEARTBEAT, log_dir=tmp_path)
    first = MasterAPI.start(config, TOKEN.encode())
    port = first.address[1]
    client = spawn_client("n1", first.address, extra=["--spawn", spawn_method])
    assert first.wait_ready(1, timeout=30).reached
    gate = client.workdir / "go"
    script = f"while [ ! -e {gate} ]; do sleep 0.02; done; exit 7"
    waiting = only(first.exec("n1", ["sh", "-c", script]))
    first.shutdown()

    gate.touch()  # it ends while no master is there
    wait_until(lambda: not psutil.pid_exists(waiting.pid), what="the client reaped it")

    def start_again() -> MasterAPI:
        return MasterAPI.start(
            MasterConfig(port=port, heartbeat=FAST_HEARTBEAT, log_dir=tmp_path),
            TOKEN.encode(), listeners=[record])

    def refs() -> list[str]:
        return [e.ref for e in events]

    second = start_again()
    try:
        wait_until(lambda: f"n1:{waiting.pid}" in refs(), what="the exit reported")
        # A later exit arrives after any repeat of the first would have.
        marker = only(second.exec("n1", ["true"]))
        wait_until(lambda: f"n1:{marker.pid}" in refs(), what="marker")
    finally:
        second.shutdown()
    third = start_again()
    try:
        assert third.wait_ready(1, timeout=30).reached
        marker2 = only(third.exec("n1", ["true"]))
        wait_until(lambda: f"n1:{marker2.pid}" in refs(), what="second marker")
    finally:
        third.shutdown()
        logging.getLogger("corral").removeHandler(handler)
    assert refs() == [f"n1:{waiting.pid}", f"n1:{marker.pid}", f"n1:{marker2.pid}"]
    assert events[0].info.describe() == "exited 7"




def complete(console: CorralConsole, line: str) -> list[str]:
    word = line.rsplit(" ", 1)[-1]
    return sorted(console.complete(word, line, len(line) - len(word), len(line)).to_strings())


def test_tab_completes_nodes_and_refs(console: CorralConsole, master: MasterAPI,
                                      nodes) -> None:
    assert complete(console, "pid -w n") == ["n1", "n2", "n3"]
    assert complete(console, "exec -w n") == ["n1", "n2", "n3"]
    assert complete(console, "pid -w n1,n") == ["n1,n2", "n1,n3"]  # after a comma too
    assert complete(console, "run -w n[1-2],n3,n") == ["n[1-2],n3,n1", "n[1-2],n3,n2"]
    running = only(master.exec("n2", ["sleep", "30"]), "n2")
    ended = only(master.exec("n2", ["true"]), "n2")
    master.wait([f"n2:{ended.pid}"], timeout=30)
    for command in ("kill", "sKill", "wait"):
        assert complete(console, f"{command} n2") == [f"n2:{running.pid}"]
    # An ended process still has a log to read.
    assert complete(console, "log n2") == sorted([f"n2:{running.pid}", f"n2:{ended.pid}"])


def test_exec_several_copies(console: CorralConsole, master: MasterAPI, nodes) -> None:
    console.onecmd_plus_hooks("exec -w n[1-2] -n 3 -- sh -c 'exit 5'")
    assert console.exit_code == 0
    group = console.last_result
    refs = [f"{name}:{info.pid}" for name in ("n1", "n2") for info in group.results[name]]
    assert len(set(refs)) == 6
    assert [r.info.describe() for r in master.wait(refs, timeout=30)] == ["exited 5"] * 6


@pytest.mark.slow
def test_pipe_given_to_sh_runs_on_the_node(console: CorralConsole, nodes) -> None:
    console.onecmd_plus_hooks("run -w n1 -- sh -c 'echo a | tr a b'")
    assert console.last_result.results["n1"].stdout == b"b\n"


def test_oversize_stdin_is_refused_before_sending(master: MasterAPI, nodes,
                                                  tmp_path: Path) -> None:
    from common.errors import UsageError

    with pytest.raises(UsageError, match="more than one frame carries"):
        master.exec("n1", ["cat"], stdin=b"x" * (9 * 1024 * 1024))
    assert master.run("n1", "true").ok  # the session is untouched
