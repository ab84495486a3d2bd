"""Batch mode keeps its report clean: information and errors on stderr, data on stdout,
and one wording for one situation."""

from __future__ import annotations

from tests.harness import PATIENCE


def test_redirected_report_holds_only_the_report(spawn_master, spawn_client) -> None:
    master = spawn_master(["list --wait 1 --timeout 30", "exec -w n1 -- no-such-program-x",
                           "kill n1:999999", "wait n1:999999 --timeout 1", "pid -w n1",
                           "run -w n1,n9 -- true", "kill n9:5", "quit"])
    spawn_client("n1", master.address)
    out, err = master.proc.communicate(timeout=PATIENCE * 2)
    assert master.proc.returncode == 1
    assert "listening on" not in out and "error" not in out, out
    # (the harness found "listening on" on stderr: MasterProcess.start reads it there)
    # The same situation in the same words, whichever command meets it.
    assert "n1:999999: error: pid 999999 was not started by this client" in err
    assert err.count("pid 999999 was not started by this client") == 2
    assert "n1: no-such-program-x: error: " in err  # a failed spawn: a row turned error line
    assert "error: unknown node: n9" in err and "n9:5: error: unknown node: n9" in err
