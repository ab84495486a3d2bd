"""What docs/processes.md and docs/concepts.md claim about logs, pipes and rusage, tried on
real clients (and, where the claim is about the kernel alone, in this process)."""

from __future__ import annotations

import io
import os
import select
import shutil
import subprocess
from pathlib import Path

import psutil
import pytest

from master.api import MasterAPI
from master.console import CorralConsole

O_APPEND_OCTAL = 0o2000  # as /proc/PID/fdinfo writes the flags


def ended(master: MasterAPI, argv: list[str], cwd: str | None = None):  # type: ignore[no-untyped-def]
    group = master.exec("n1", argv, cwd=cwd)
    assert group.ok, group.errors
    (info,) = group.results["n1"]
    (result,) = master.wait([f"n1:{info.pid}"], timeout=30)
    assert result.info is not None
    return result.info


def log_lines(info) -> list[str]:  # type: ignore[no-untyped-def]
    return Path(info.log).read_text().splitlines()


PRINTF_PROGRAM = r"""
#include <stdio.h>
int main(int argc, char **argv) {
    if (argc > 1) setvbuf(stdout, NULL, _IOLBF, 0); /* line-buffered, as on a terminal */
    for (int i = 1; i <= 3; i++) {
        printf("out%d\n", i);           /* stdio buffer: written at exit when fully buffered */
        fprintf(stderr, "err%d\n", i);  /* stderr is unbuffered: one write(2) at once */
    }
    return 0;
}
"""


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")
def test_buffered_printf_reaches_the_shared_log_out_of_order(
        master: MasterAPI, ready_client, tmp_path: Path) -> None:
    client = ready_client("n1")
    source = tmp_path / "printer.c"
    source.write_text(PRINTF_PROGRAM)
    program = client.workdir / "printer"
    subprocess.run(["cc", "-o", str(program), str(source)], check=True)
    # To a file, stdout is fully buffered: every printf line comes after every stderr line.
    assert log_lines(ended(master, ["./printer"])) == [
        "err1", "err2", "err3", "out1", "out2", "out3"]
    # Line-buffered, each printf is its own write(2), and the log keeps the program's order.
    assert log_lines(ended(master, ["./printer", "line"])) == [
        "out1", "err1", "out2", "err2", "out3", "err3"]


def test_the_log_is_opened_for_appending(master: MasterAPI, ready_client) -> None:
    ready_client("n1")
    group = master.exec("n1", ["sleep", "30"])
    (info,) = group.results["n1"]
    try:
        for fd in (1, 2):
            fdinfo = Path(f"/proc/{info.pid}/fdinfo/{fd}").read_text()
            flags = int(next(line.split()[1] for line in fdinfo.splitlines()
                             if line.startswith("flags:")), 8)
            assert flags & O_APPEND_OCTAL, f"fd {fd} lacks O_APPEND: {oct(flags)}"
    finally:
        master.signal([f"n1:{info.pid}"], 9)
    # A second, separate opening of the same log does not overwrite: O_APPEND puts every
    # write at the end of the file, whichever open file description it goes through.
    script = "echo first; echo second >> /proc/self/fd/1; echo third"
    assert log_lines(ended(master, ["sh", "-c", script])) == ["first", "second", "third"]


def test_a_reader_sees_eof_only_once_every_write_end_is_closed() -> None:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os._exit(0)  # the child's copy of both ends closes as it exits
    os.waitpid(pid, 0)
    try:
        readable, _, _ = select.select([read_end], [], [], 0)
        assert readable == [], "EOF seen while the parent still holds the write end"
        os.close(write_end)
        assert os.read(read_end, 1) == b""  # EOF, at once
    finally:
        os.close(read_end)


def test_exec_credits_the_old_peak_and_children_report_the_largest(
        master: MasterAPI, ready_client, spawn_method: str) -> None:
    client = ready_client("n1")
    client_rss_kib = psutil.Process(client.pid).memory_info().rss // 1024
    status = Path(f"/proc/{client.pid}/status").read_text()
    hwm_before = int(next(line.split()[1] for line in status.splitlines()
                          if line.startswith("VmHWM:")))
    rows = [ended(master, ["sh", "-c", "true"]) for _ in range(3)]
    peaks = [int(row.rusage["ru_maxrss"]) for row in rows]
    if spawn_method == "posix":
        # vfork shares the client's address space: exec credits the client's own peak
        # (within the kernel's batched RSS counting, which can lag by a few pages).
        assert all(peak >= hwm_before * 0.9 for peak in peaks), (peaks, hwm_before)
    else:
        # a fork child's copy starts at the client's resident size at the fork
        assert all(peak >= client_rss_kib // 2 for peak in peaks), (peaks, client_rss_kib)
    # Either way far above what sh itself needs (about 1.6 MiB from a small C parent).
    assert min(peaks) > 8 * 1024
    report = master.rusage("n1").results["n1"]
    node_peak = int(report.children["ru_maxrss"])
    # RUSAGE_CHILDREN's max RSS is the largest child's, not the sum of them.
    assert max(peaks) <= node_peak < sum(peaks)


def test_the_getrusage_report_says_where_max_rss_comes_from(master: MasterAPI,
                                                           ready_client) -> None:
    ready_client("n1")
    ended(master, ["true"])
    out = io.StringIO()
    console = CorralConsole(master, interactive=False, stdout=out)
    console.onecmd_plus_hooks("getrusage")
    assert "max rss includes the client's memory that exec replaced" in out.getvalue()
    assert "the largest child's, not a sum" in out.getvalue()
