"""A client started with descriptors 0, 1 and 2 closed (``corral-client <&- >&- 2>&-``, as
some supervisors leave a daemon) puts /dev/null on them first: otherwise its first socket
would be descriptor 0 and a child's dup2 onto 0-2 would close the client's own files."""

from __future__ import annotations

import os
from pathlib import Path

from master.api import MasterAPI
from tests.harness import ClientProcess, wait_until

CLOSE_STANDARD = ["sh", "-c", 'exec "$@" <&- >&- 2>&-', "sh"]


def test_a_client_started_with_0_1_2_closed_works(master: MasterAPI, tmp_path: Path,
                                                  token_file: Path, spawn_method: str) -> None:
    log_file = tmp_path / "n1-own.log"
    client = ClientProcess("n1", master.address, token_file, tmp_path,
                           extra=["--spawn", spawn_method, "--log-file", str(log_file)],
                           prefix=CLOSE_STANDARD).start()
    try:
        assert master.wait_ready(1, timeout=30).reached
        for fd in (0, 1, 2):
            assert os.readlink(f"/proc/{client.pid}/fd/{fd}") == os.devnull
        result = master.run("n1", "echo out; echo err >&2").results["n1"]
        assert (result.stdout, result.stderr) == (b"out\n", b"err\n")
        (info,) = master.exec("n1", ["sh", "-c", "echo logged; echo also >&2"]).results["n1"]
        wait_until(lambda: master.log(f"n1:{info.pid}").data == b"logged\nalso\n",
                   what="both lines in the process's log")
        (refused,) = master.exec("n1", ["no-such-program-here"]).results["n1"]
        assert refused.describe() == (
            "spawn failed: No such file or directory: no-such-program-here")
        assert "registered with master" in log_file.read_text()
    finally:
        client.stop()
