"""Big process tables stay usable: pid filters, forget, and a client's own limit on the
ended processes it remembers; through the console over real clients."""

from __future__ import annotations

import io
import json
import signal

import pytest

from master.api import MasterAPI
from master.console import CorralConsole
from tests.harness import wait_until


@pytest.fixture
def console(master: MasterAPI) -> CorralConsole:
    return CorralConsole(master, interactive=False, stdout=io.StringIO())


def refs_shown(console: CorralConsole) -> list[str]:
    group = console.last_result
    return [f"{name}:{p.pid}" for name in group.succeeded for p in group.results[name]]


def ended(master: MasterAPI, group) -> list[str]:  # type: ignore[no-untyped-def]
    refs = [f"{name}:{p.pid}" for name in group.succeeded for p in group.results[name]]
    master.wait(refs, timeout=30)
    return refs


def test_pid_filters(console: CorralConsole, master: MasterAPI, spawn_client) -> None:
    for name in ("n1", "n2"):
        spawn_client(name, master.address)
    assert master.wait_ready(2, timeout=30).reached
    good = ended(master, master.exec("n[1-2]", ["true"], count=3))
    bad = ended(master, master.exec("n1", ["sh", "-c", "exit 3"]))
    sleeper = master.exec("n2", ["sleep", "60"])
    (running,) = [f"n2:{p.pid}" for p in sleeper.results["n2"]]
    console.onecmd_plus_hooks("pid --state running")
    assert refs_shown(console) == [running]
    console.onecmd_plus_hooks("pid --state failed")
    assert refs_shown(console) == bad
    console.onecmd_plus_hooks("pid --state ended -w n2")
    assert refs_shown(console) == [r for r in good if r.startswith("n2:")]
    console.onecmd_plus_hooks("pid --program 'sle*'")
    assert refs_shown(console) == [running]
    console.onecmd_plus_hooks("pid --program '*exit 3*' --state ended")
    assert refs_shown(console) == bad
    console.onecmd_plus_hooks("pid --last 2")
    assert sorted(refs_shown(console)) == sorted([bad[0], running])
    console.onecmd_plus_hooks("pid --state sleeping")
    assert console.exit_code == 1
    master.signal([running], signal.SIGKILL)


def test_forget(console: CorralConsole, master: MasterAPI, spawn_client, capsys) -> None:
    client = spawn_client("n1", master.address)
    assert master.wait_ready(1, timeout=30).reached
    refs = ended(master, master.exec("n1", ["true"], count=4))
    (running,) = [f"n1:{p.pid}" for p in master.exec("n1", ["sleep", "60"]).results["n1"]]
    console.onecmd_plus_hooks(f"forget {refs[0]} {running}")
    assert console.exit_code == 1
    assert [o.ok for o in console.last_result] == [True, False]
    assert f"{running}: error: pid {running.split(':')[1]} is still running" in (
        capsys.readouterr().err)
    console.exit_code = 0
    console.onecmd_plus_hooks("pid")
    assert refs_shown(console) == [*refs[1:], running]
    console.onecmd_plus_hooks("forget --all-ended -w n1")
    assert console.exit_code == 0
    assert "n1      3" in console.stdout.getvalue()  # type: ignore[attr-defined]
    console.onecmd_plus_hooks("pid")
    assert refs_shown(console) == [running]
    journal = (client.state_dir / "processes.jsonl").read_text().splitlines()
    assert {json.loads(line)["pid"] for line in journal} == {int(running.split(":")[1])}
    master.signal([running], signal.SIGKILL)


def test_client_keeps_at_most_its_limit(console: CorralConsole, master: MasterAPI,
                                        spawn_client) -> None:
    client = spawn_client("n1", master.address, extra=["--keep-ended", "5"])
    assert master.wait_ready(1, timeout=30).reached
    refs = [ref for _ in range(8) for ref in ended(master, master.exec("n1", ["true"]))]
    kept = [f"n1:{p.pid}" for p in master.processes("n1").results["n1"]]
    assert kept == refs[3:]  # one after the other: the first three to end were forgotten
    client.stop()
    client.start()  # the limit holds after a restart too, from the journal
    assert master.wait_ready(1, timeout=30).reached
    wait_until(lambda: len(master.processes("n1").results.get("n1", [])) == 5, what="5")
