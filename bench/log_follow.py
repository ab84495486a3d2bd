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
too (the master's apart for its console thread and its hub thread): it says where a slow
round went. ``--profile PREFIX`` records both with py-spy over the whole run
(PREFIX.master.txt, PREFIX.client.txt; ``bench/profile_top.py`` reads them); ``--perf
PREFIX`` records the whole machine with ``perf`` during the measured follows only
(PREFIX.perf.data; ``perf report -i PREFIX.perf.data --sort comm,pid``).

``--cli`` measures ``corral log REF -n 0 -f`` (the CLI process, through the control socket)
in every round too.

    .venv/bin/python bench/log_follow.py [--mb 200] [--rounds 5] [--cli] [--profile PREFIX]
                                         [--perf PREFIX]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import AbstractContextManager, nullcontext
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


def master_threads_cpu() -> dict[str, float]:
    """CPU seconds of this process's console thread (the main one) and of the rest (the
    hub: receiving, checking and decoding the chunks)."""
    main = threading.main_thread().native_id
    spent = {"master console thread": 0.0, "master hub thread": 0.0}
    for thread in psutil.Process().threads():
        name = "master console thread" if thread.id == main else "master hub thread"
        spent[name] += thread.user_time + thread.system_time
    return spent


class Perf:
    """``perf record`` of the whole machine, started paused, recording only between
    ``enable`` and ``disable`` (its control FIFOs)."""

    def __init__(self, output: Path, folder: Path) -> None:
        control, ack = folder / "perf.ctl", folder / "perf.ack"
        os.mkfifo(control)
        os.mkfifo(ack)
        self.process = subprocess.Popen(
            ["perf", "record", "--all-cpus", "--call-graph", "fp", "--freq", "1999",
             "--delay", "-1", "--control", f"fifo:{control},{ack}", "--output", str(output)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._control = open(control, "w")  # noqa: SIM115 -- open until stop
        self._ack = open(ack)  # noqa: SIM115

    def _say(self, command: str) -> None:
        self._control.write(command + "\n")
        self._control.flush()
        self._ack.readline()

    def enable(self) -> None:
        self._say("enable")

    def disable(self) -> None:
        self._say("disable")

    def stop(self) -> None:
        self._control.close()
        self._ack.close()
        self.process.send_signal(signal.SIGINT)
        self.process.wait()


def start_profile(pid: int, output: Path) -> subprocess.Popen[bytes]:
    """py-spy on ``pid`` until stopped with SIGINT (its own CPU is not the process's)."""
    return subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record",
                             "--pid", str(pid), "--rate", "500", "--threads", "--nonblocking",
                             "--format", "raw", "--output", str(output)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class Rounds:
    def __init__(self, api: MasterAPI, folder: Path, source: Path, client_pid: int,
                 perf: Perf | None) -> None:
        self.api = api
        self.folder = folder
        self.source = source
        self.size = source.stat().st_size
        self.perf = perf
        self.writer_rates: list[float] = []
        self.processes = {"master": psutil.Process(), "client": psutil.Process(client_pid)}
        self.cpu_per_mb: dict[str, list[float]] = {
            name: [] for name in [*self.processes, *master_threads_cpu(), "writer"]}
        self.waits_per_mb: dict[str, list[float]] = {name: [] for name in self.processes}
        self.cli_env = dict(os.environ, CORRAL_CONTROL=str(folder / "control.sock"),
                            PYTHONPATH=str(ROOT))

    def follow(self) -> float:
        out = self.folder / "followed.out"
        cpu_before = self.cpu_now()
        waits_before = self.waits_now()
        with open(out, "w") as stdout, self.recorded():
            console = CorralConsole(self.api, interactive=False, stdout=stdout)
            started = time.perf_counter()
            group = self.api.exec("n1", ["cat", str(self.source)])
            (info,) = group.results["n1"]
            console.onecmd_plus_hooks(f"log n1:{info.pid} -n 0 -f")
            elapsed = time.perf_counter() - started
        for name, spent in self.cpu_now().items():
            self.cpu_per_mb[name].append((spent - cpu_before[name]) / (self.size / MB))
        for name, waits in self.waits_now().items():
            self.waits_per_mb[name].append((waits - waits_before[name]) / (self.size / MB))
        shown = console.last_result.shown
        if shown != self.size or out.stat().st_size != self.size:
            raise SystemExit(f"log -f showed {shown} bytes of {self.size}")
        (ended,) = self.api.wait([f"n1:{info.pid}"], timeout=30)
        assert ended.info is not None and ended.info.ended is not None
        self.writer_rates.append(self.size / max(1e-6, ended.info.ended - ended.info.started))
        if ended.info.rusage is not None:
            writer_cpu = ended.info.rusage["ru_utime"] + ended.info.rusage["ru_stime"]
            self.cpu_per_mb["writer"].append(writer_cpu / (self.size / MB))
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
        with open(out, "wb") as stdout, self.recorded():
            subprocess.run([*CORRAL, "log", f"n1:{info.pid}", "-n", "0", "-f"], stdout=stdout,
                           env=self.cli_env, cwd=ROOT, check=True)
        elapsed = time.perf_counter() - started
        if out.stat().st_size != self.size:
            raise SystemExit(f"corral log -f wrote {out.stat().st_size} bytes of {self.size}")
        self.api.wait([f"n1:{info.pid}"], timeout=30)
        Path(info.log).unlink()
        out.unlink()
        return self.size / elapsed

    def waits_now(self) -> dict[str, int]:
        """Voluntary context switches: each is a wait that something had to wake."""
        return {name: p.num_ctx_switches().voluntary for name, p in self.processes.items()}

    def cpu_now(self) -> dict[str, float]:
        return {**{name: cpu_seconds(p) for name, p in self.processes.items()},
                **master_threads_cpu()}

    def recorded(self) -> AbstractContextManager[object]:
        """``perf`` records while in it, if asked to."""
        if self.perf is None:
            return nullcontext()
        perf = self.perf

        class Recorded:
            def __enter__(self) -> None:
                perf.enable()

            def __exit__(self, *_exc: object) -> None:
                perf.disable()

        return Recorded()

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
    parser.add_argument("--perf", metavar="PREFIX",
                        help="perf samples of the whole machine during the follows only, "
                             "into PREFIX.perf.data")
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
        perf: Perf | None = None
        try:
            if not api.wait_ready(1, 30).reached:
                raise SystemExit("the client did not connect")
            perf = Perf(Path(f"{args.perf}.perf.data"), folder) if args.perf else None
            rounds = Rounds(api, folder, source, client.pid, perf)
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
            if perf is not None:
                perf.stop()
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
        waits = rounds.waits_per_mb.get(name)
        woken = f", woken {spread(waits, ' times', 1, 1)}" if waits else ""
        print(f"  {name} CPU per MB followed: {spread(per_mb, ' ms', 1000, 2)}{woken}")
    print("  " + ratio_line("log -f against cat, per round", ratios, "50 %"))
    record("log_follow", {"mb": args.mb, "follow_mb_s": [f / MB for f in figures["follow"]],
                          "cat_mb_s": [c / MB for c in figures["cat"]]},
           [goal("log -f to a redirected console / cat of the same file",
                 100 * statistics.median(ratios), 50, " %", higher_is_better=True)])


if __name__ == "__main__":
    main()
