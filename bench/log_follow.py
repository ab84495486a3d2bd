"""``log -f`` behind a fast writer, to a redirected console, against ``cat`` of the file.

One real client; a process on it writes SIZE MB of text lines into its log as fast as
``cat`` can (it is ``cat`` of a file of lines made beforehand). The console
(``CorralConsole`` in this process, its stdout a file) runs ``log REF -n 0 -f`` from the
moment the process starts until it has shown the whole log of the ended process: its rate
is the log's size over that time. Baseline: ``cat`` of the same file of lines into a file
in the same folder. Rounds alternate (the order swapped every other round), with the page
cache written back and a pause before each; medians and spreads are printed, and the
ratio of each round to the baseline of the same round.

The writer is ``cat`` rather than ``yes | head``: on two busy cores ``yes | head -c``
itself wrote only 400-600 MB/s, a third of what ``cat`` does, and a follower behind it
can only show as fast as it writes; the figure would measure the writer. The writer's own
rate is printed too, so one sees whether it, not ``log -f``, set the pace.

The CPU time the master (this process) and the client spent per MB followed is printed
too: it says where a slow round went. ``--profile PREFIX`` records both with py-spy over
the whole run (PREFIX.master.txt, PREFIX.client.txt; ``bench/profile_top.py`` reads them).

``--cli`` measures ``corral log REF -n 0 -f`` (the CLI process, through the control socket)
in every round too.

    .venv/bin/python bench/log_follow.py [--mb 200] [--rounds 5] [--cli] [--profile PREFIX]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.rig import (  # noqa: E402
    TOKEN,
    alternate,
    goal,
    ratio_line,
    record,
    spread,
    start_client,
    stop_all,
    write_token,
)
from common.malloc import keep_big_buffers  # noqa: E402
from master.api import MasterAPI  # noqa: E402
from master.console import CorralConsole  # noqa: E402
from master.server import MasterConfig  # noqa: E402

LINE = b"corral log-follow benchmark, a line of about sixty bytes 0123\n"
MB = 1_000_000
CORRAL = [sys.executable, "-m", "master.front.cli"]


def make_lines(path: Path, size: int) -> None:
    block = LINE * (MB // len(LINE))
    with open(path, "wb") as out:
        while size > 0:
            out.write(block[:size])
            size -= len(block)


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def start_profile(pid: int, output: Path) -> subprocess.Popen[bytes]:
    """py-spy on ``pid`` until stopped with SIGINT (its own CPU is not the process's)."""
    return subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record",
                             "--pid", str(pid), "--rate", "500", "--threads", "--nonblocking",
                             "--format", "raw", "--output", str(output)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class Rounds:
    def __init__(self, api: MasterAPI, folder: Path, source: Path, client_pid: int) -> None:
        self.api = api
        self.folder = folder
        self.source = source
        self.size = source.stat().st_size
        self.writer_rates: list[float] = []
        self.processes = {"master": psutil.Process(), "client": psutil.Process(client_pid)}
        self.cpu_per_mb: dict[str, list[float]] = {name: [] for name in self.processes}
        self.cli_env = dict(os.environ, CORRAL_CONTROL=str(folder / "control.sock"),
                            PYTHONPATH=str(ROOT))

    def follow(self) -> float:
        out = self.folder / "followed.out"
        cpu_before = {name: cpu_seconds(p) for name, p in self.processes.items()}
        with open(out, "w") as stdout:
            console = CorralConsole(self.api, interactive=False, stdout=stdout)
            started = time.perf_counter()
            group = self.api.exec("n1", ["cat", str(self.source)])
            (info,) = group.results["n1"]
            console.onecmd_plus_hooks(f"log n1:{info.pid} -n 0 -f")
            elapsed = time.perf_counter() - started
        for name, process in self.processes.items():
            spent = cpu_seconds(process) - cpu_before[name]
            self.cpu_per_mb[name].append(spent / (self.size / MB))
        shown = console.last_result.shown
        if shown != self.size or out.stat().st_size != self.size:
            raise SystemExit(f"log -f showed {shown} bytes of {self.size}")
        (ended,) = self.api.wait([f"n1:{info.pid}"], timeout=30)
        assert ended.info is not None and ended.info.ended is not None
        self.writer_rates.append(self.size / max(1e-6, ended.info.ended - ended.info.started))
        Path(info.log).unlink()
        out.unlink()
        return self.size / elapsed

    def cli(self) -> float:
        """The same through the ``corral`` CLI (its start-up included: it is what one
        waits for), the master's control socket between it and the hub."""
        out = self.folder / "cli.out"
        started = time.perf_counter()
        group = self.api.exec("n1", ["cat", str(self.source)])
        (info,) = group.results["n1"]
        with open(out, "wb") as stdout:
            subprocess.run([*CORRAL, "log", f"n1:{info.pid}", "-n", "0", "-f"], stdout=stdout,
                           env=self.cli_env, cwd=ROOT, check=True)
        elapsed = time.perf_counter() - started
        if out.stat().st_size != self.size:
            raise SystemExit(f"corral log -f wrote {out.stat().st_size} bytes of {self.size}")
        self.api.wait([f"n1:{info.pid}"], timeout=30)
        Path(info.log).unlink()
        out.unlink()
        return self.size / elapsed

    def cli_start(self) -> float:
        """Seconds the CLI takes to start and exit with nothing to do."""
        started = time.perf_counter()
        subprocess.run([*CORRAL, "--help"], stdout=subprocess.DEVNULL, env=self.cli_env,
                       cwd=ROOT, check=True)
        return time.perf_counter() - started

    def cat(self) -> float:
        started = time.perf_counter()
        with open(self.folder / "cat.out", "wb") as out:
            subprocess.run(["cat", str(self.source)], stdout=out, check=True)
        rate = self.size / (time.perf_counter() - started)
        (self.folder / "cat.out").unlink()
        return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cli", action="store_true",
                        help="also `corral log -f` (the CLI process) in every round")
    parser.add_argument("--profile", metavar="PREFIX",
                        help="py-spy samples of master and client into PREFIX.*.txt")
    args = parser.parse_args()
    keep_big_buffers()  # as corral-master does: the console runs in this process
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_token(folder)
        source = folder / "lines.txt"
        make_lines(source, args.mb * MB)
        api = MasterAPI.start(MasterConfig(port=0, control=folder / "control.sock"),
                              TOKEN.encode())
        client = start_client(folder, api.address[1], "n1")
        spies: list[subprocess.Popen[bytes]] = []
        try:
            if not api.wait_ready(1, 30).reached:
                raise SystemExit("the client did not connect")
            rounds = Rounds(api, folder, source, client.pid)
            if args.profile:
                spies = [start_profile(os.getpid(), Path(f"{args.profile}.master.txt")),
                         start_profile(client.pid, Path(f"{args.profile}.client.txt"))]
            measures = {"follow": rounds.follow, "cat": rounds.cat}
            if args.cli:
                measures["cli"] = rounds.cli
                cli_start = [rounds.cli_start() for _ in range(3)]
            figures = alternate(args.rounds, measures)
        finally:
            for spy in spies:
                spy.send_signal(signal.SIGINT)
                spy.wait()
            stop_all([client])
            api.shutdown()
    ratios = [f / c for f, c in zip(figures["follow"], figures["cat"], strict=True)]
    print(f"{args.mb} MB log, {args.rounds} alternating rounds ({os.cpu_count()} cores, load "
          f"{os.getloadavg()[0]:.1f} at the end), medians (runs):")
    print(f"  cat FILE > file:            {spread(figures['cat'], ' MB/s', 1 / MB)}")
    print(f"  log REF -n 0 -f > file:     {spread(figures['follow'], ' MB/s', 1 / MB)}")
    print(f"  the writer on the node:     {spread(rounds.writer_rates, ' MB/s', 1 / MB)}")
    if args.cli:
        cli_ratios = [f / c for f, c in zip(figures["cli"], figures["cat"], strict=True)]
        print(f"  corral log REF -n 0 -f > file: {spread(figures['cli'], ' MB/s', 1 / MB)}, "
              f"{spread(cli_ratios, ' %', 100)} of cat (its start-up, "
              f"{statistics.median(cli_start) * 1000:.0f} ms, included)")
    for name, per_mb in rounds.cpu_per_mb.items():
        print(f"  {name} CPU per MB followed: {spread(per_mb, ' ms', 1000, 2)}")
    print("  " + ratio_line("log -f against cat, per round", ratios, "50 %"))
    record("log_follow", {"mb": args.mb, "follow_mb_s": [f / MB for f in figures["follow"]],
                          "cat_mb_s": [c / MB for c in figures["cat"]]},
           [goal("log -f to a redirected console / cat of the same file",
                 100 * statistics.median(ratios), 50, " %", higher_is_better=True)])


if __name__ == "__main__":
    main()
