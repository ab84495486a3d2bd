"""Spawn rate of /bin/true on one client through corral, against raw posix_spawn.

Baseline, in the same run: a Python loop calling ``os.posix_spawnp`` for /bin/true with its
output on a log file, reaping with ``waitpid``: what the client does, without corral.
Through corral: the master's API sends ``exec`` requests to one real client process, each
answered once its processes are running; a measurement ends when every exit has been
reported back to the master. Measured one process per request with 1 request in flight
(back to back) and with 16, three ways: 16 threads each calling the blocking
``MasterAPI.exec``; one thread keeping 16 ``MasterAPI.submit_exec`` futures outstanding;
another process keeping 16 calls in flight on one connection to the control socket
(``master.front.control.Pipeline``, as a script or CLI would). Then 100 per request
(``exec -n 100``, 16 in flight, futures), with each spawn method. Per measurement the
master's and the client's CPU time and context switches (wake-ups) are printed.
``--profile DIR`` then samples both with py-spy while ``exec`` runs with 16 in flight.

This machine's speed drifts by up to 2x over minutes, so baseline and corral are measured
alternately (the order reversed every other round), settled before each, several rounds,
and the medians and spreads printed. Between measurements the client forgets its ended
processes: a table grown by tens of thousands of them made every ``fork`` copy a bigger
process, until ``exec -n 100`` timed out from the second round on. Then, per method, the
client's table is filled to the most ended processes a client keeps (``--keep-ended``,
10,000) and ``exec`` with 16 in flight measured again beside a measurement with an empty
table: a busy client must not slow down as its table fills.

    .venv/bin/python bench/spawn_rate.py [--count 3200] [--rounds 3] [--methods posix fork]
        [--full-table 10000] [--profile DIR [--profile-way threads|futures|pipeline]]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import functools
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import Future
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from bench.rig import alternate, goal, record, settle, spread  # noqa: E402
from client.proctable import KEEP_ENDED  # noqa: E402
from common.malloc import keep_big_buffers  # noqa: E402
from master.api import MasterAPI  # noqa: E402
from master.events import Event, ProcessEvent  # noqa: E402
from master.front.control import Pipeline, SocketBackend  # noqa: E402
from master.front.results import GroupResult  # noqa: E402
from master.server import MasterConfig  # noqa: E402

TOKEN = "bench-token"
THREADS = 16


def raw_rate(count: int, folder: Path) -> float:
    log = folder / "raw.log"
    actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
               (os.POSIX_SPAWN_OPEN, 1, str(log), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
               (os.POSIX_SPAWN_DUP2, 1, 2)]
    started = time.perf_counter()
    for _ in range(count):
        os.posix_spawnp("true", ["true"], os.environ, file_actions=actions, setsid=True)
    for _ in range(count):
        os.waitpid(-1, 0)
    return count / (time.perf_counter() - started)


def context_switches(pid: int) -> int:
    """How often the threads of process ``pid`` have left the CPU so far: each time one
    waited (on a lock, the GIL, a socket) or was preempted."""
    total = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            total += sum(int(line.split()[1]) for line in status.read_text().splitlines()
                         if "ctxt_switches:" in line)
    return total


@dataclasses.dataclass
class Cost:
    """What one kind of measurement cost, summed over its rounds."""

    processes: int = 0
    requests: int = 0
    master_cpu: float = 0.0
    client_cpu: float = 0.0
    master_switches: int = 0
    client_switches: int = 0

    def __str__(self) -> str:
        requests, processes = max(self.requests, 1), max(self.processes, 1)
        return (f"master {1e6 * self.master_cpu / requests:.0f} us CPU and "
                f"{self.master_switches / requests:.1f} context switches per request, "
                f"client {1e6 * self.client_cpu / processes:.0f} us and "
                f"{self.client_switches / processes:.1f} per process")


class CorralRig:
    """A master (in this process) and one real client using spawn method ``method``."""

    def __init__(self, folder: Path, method: str) -> None:
        self.method = method
        token = folder / "token"
        token.write_text(TOKEN)
        # Exits are counted on the hub and the waiting thread woken once, when all are in:
        # a wake-up per exit would be the bench's cost, counted as the master's.
        self.exits = 0
        self._awaited = 0
        self._all_ended = threading.Event()
        self.control = folder / "control.sock"
        self.api = MasterAPI.start(MasterConfig(port=0, log_dir=folder, control=self.control),
                                   TOKEN.encode(), listeners=[self._on_event])
        self.client = subprocess.Popen(
            [sys.executable, "-m", "client", "--master", f"127.0.0.1:{self.api.address[1]}",
             "--name", "n1", "--token-file", str(token), "--state-dir", str(folder / method),
             "--spawn", method], cwd=ROOT, stderr=subprocess.DEVNULL)
        assert self.api.wait_ready(1, 30).reached
        self.costs: dict[str, Cost] = collections.defaultdict(Cost)

    def _on_event(self, event: Event) -> None:
        if isinstance(event, ProcessEvent):
            self.exits += 1
            if self.exits == self._awaited:
                self._all_ended.set()

    def _expect_exits(self, count: int) -> None:
        """Before starting ``count`` processes (none is running now)."""
        self._all_ended.clear()
        self._awaited = self.exits + count
        if count == 0:
            self._all_ended.set()

    def rate(self, count: int, batch: int, in_flight: int, forget: bool = True,
             label: str = "", way: str = "threads") -> float:
        """Processes a second; ``forget``: the client forgets them all afterwards. ``way``:
        ``threads``, each of ``in_flight`` threads calling the blocking ``exec`` in turn;
        ``futures``, one thread keeping ``in_flight`` ``submit_exec`` futures outstanding;
        ``pipeline``, another process keeping ``in_flight`` calls outstanding on one
        connection to the control socket (its own CPU time is not counted)."""
        requests = count // batch // in_flight
        done = requests * in_flight * batch

        failures: list[str] = []

        def check(group: GroupResult[Any]) -> bool:
            if not group.ok:
                failures.append(str(group.errors))
            return group.ok

        def worker() -> None:
            for _ in range(requests):
                if not check(self.api.exec("n1", ["true"], count=batch)):
                    return

        def submitter() -> None:
            left = requests * in_flight
            pending: set[Future[GroupResult[Any]]] = set()
            while left or pending:
                while left and len(pending) < in_flight:
                    pending.add(self.api.submit_exec("n1", ["true"], count=batch))
                    left -= 1
                answered, pending = futures.wait(pending, return_when=futures.FIRST_COMPLETED)
                if not all([check(future.result()) for future in answered]):
                    return

        driver = None
        if way == "pipeline":  # started and connected before the clock starts
            driver = subprocess.Popen(
                [sys.executable, __file__, "--drive", str(self.control), str(requests * in_flight),
                 str(in_flight), str(batch)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                text=True)
            assert driver.stdout is not None and driver.stdout.readline() == "ready\n"

        def pipelined() -> None:
            assert driver is not None and driver.stdin is not None
            driver.stdin.write("go\n")
            driver.stdin.close()
            if driver.wait() != 0:
                failures.append(f"the pipelined driver failed (exit {driver.returncode})")

        threads = ([threading.Thread(target=worker) for _ in range(in_flight)]
                   if way == "threads" else
                   [threading.Thread(target=submitter if way == "futures" else pipelined)])
        client_usage = psutil.Process(self.client.pid)
        master_before, client_before = os.times(), client_usage.cpu_times()
        switches_before = context_switches(os.getpid()), context_switches(self.client.pid)
        self._expect_exits(done)
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:  # their processes will never end: waiting for them would hang
            raise SystemExit(f"--spawn {self.method}: exec failed: {failures[0]}")
        self._all_ended.wait()
        elapsed = time.perf_counter() - started
        master_after, client_after = os.times(), client_usage.cpu_times()
        cost = self.costs[label]
        cost.master_cpu += (master_after.user + master_after.system
                            - master_before.user - master_before.system)
        cost.client_cpu += (client_after.user + client_after.system
                            - client_before.user - client_before.system)
        cost.master_switches += context_switches(os.getpid()) - switches_before[0]
        cost.client_switches += context_switches(self.client.pid) - switches_before[1]
        cost.processes += done
        cost.requests += done // batch
        if forget:
            self.api.forget_ended("n1")  # the next measurement starts with a small client
        return done / elapsed

    def fill(self, count: int) -> None:
        """Leave ``count`` ended processes in the client's table."""
        self._expect_exits(count // 100 * 100)
        for _ in range(count // 100):
            group = self.api.exec("n1", ["true"], count=100)
            if not group.ok:
                raise SystemExit(f"--spawn {self.method}: exec failed: {group.errors}")
        self._all_ended.wait()

    def close(self) -> None:
        self.client.terminate()
        self.client.wait()
        self.api.shutdown()


def drive(control: Path, requests: int, in_flight: int, batch: int) -> None:
    """The ``pipeline`` way, in a process of its own (as a CLI or a script would be)."""
    with Pipeline(SocketBackend(control)) as pipeline:
        print("ready", flush=True)
        sys.stdin.readline()
        args = {"nodeset": "n1", "argv": ["true"], "cwd": None, "env": None, "stdin": None,
                "count": batch}
        left = requests
        pending: set[Future[GroupResult[Any]]] = set()
        while left or pending:
            while left and len(pending) < in_flight:
                pending.add(pipeline.submit("exec", args))
                left -= 1
            answered, pending = futures.wait(pending, return_when=futures.FIRST_COMPLETED)
            for future in answered:
                if not future.result().ok:
                    raise SystemExit(f"exec failed: {future.result().errors}")


def measures(rig: CorralRig, count: int, folder: Path) -> dict[str, Callable[[], float]]:
    kinds = {"exec, 1 in flight": (1, 1, "threads"),
             f"exec, {THREADS} in flight, threads": (1, THREADS, "threads"),
             f"exec, {THREADS} in flight, futures": (1, THREADS, "futures"),
             f"exec, {THREADS} in flight, control socket": (1, THREADS, "pipeline"),
             f"exec -n 100, {THREADS} in flight": (100, THREADS, "futures")}
    chosen: dict[str, Callable[[], float]] = {"raw": lambda: raw_rate(count, folder)}
    for label, (batch, in_flight, way) in kinds.items():
        chosen[label] = functools.partial(rig.rate, count, batch, in_flight, label=label,
                                          way=way)
    return chosen


def profile(rig: CorralRig, count: int, folder: Path, seconds: int, way: str) -> None:
    """``exec`` with THREADS in flight, back to back, while py-spy samples this process
    (the master and the threads calling it) and the client."""
    folder.mkdir(parents=True, exist_ok=True)
    spy = str(Path(sys.executable).with_name("py-spy"))
    # Native frames of the master fail py-spy's merge (greenlets switch stacks): Python only.
    samplers = [subprocess.Popen([spy, "record", "--pid", str(pid), "--duration", str(seconds),
                                  "--rate", "250", "--threads", *native, *gil, "--format", "raw",
                                  "--output", str(folder / f"{who}.txt")],
                                 stdout=subprocess.DEVNULL,
                                 stderr=(folder / f"{who}.err").open("wb"))
                for who, pid, native, gil in (("client", rig.client.pid, ["--native"], []),
                                         ("master", os.getpid(), [], ["--gil"]))]
    time.sleep(1.0)  # py-spy attaches
    deadline = time.monotonic() + seconds + 5
    while any(s.poll() is None for s in samplers) and time.monotonic() < deadline:
        rig.rate(count, 1, THREADS, label="profiled", way=way)
    for sampler in samplers:
        sampler.wait()
    print(f"profiled exec with {THREADS} in flight ({way}): {folder}/client.txt, master.txt "
          f"({rig.costs['profiled']})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=3200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--full-table", type=int, default=KEEP_ENDED, metavar="N",
                        help="ended processes left in the client's table for the last "
                             "measurement (default: as many as a client keeps)")
    parser.add_argument("--methods", nargs="+", default=["posix", "fork"],
                        choices=["posix", "fork"])
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="afterwards, sample the master and the client with py-spy "
                             "(DIR/METHOD/master.txt, client.txt; bench/profile_top.py)")
    parser.add_argument("--profile-seconds", type=int, default=10)
    parser.add_argument("--profile-way", choices=["threads", "futures", "pipeline"],
                        default="futures")
    parser.add_argument("--drive", nargs=4, help=argparse.SUPPRESS)  # see ``drive``
    args = parser.parse_args()
    if args.drive:
        control, requests, in_flight, batch = args.drive
        drive(Path(control), int(requests), int(in_flight), int(batch))
        return
    keep_big_buffers()  # as corral-master does: the master runs in this process
    print(f"spawn rate of /bin/true, {args.count} processes a measurement, medians of "
          f"{args.rounds} alternating rounds ({os.cpu_count()} cores, load "
          f"{os.getloadavg()[0]:.1f})")
    goals = []
    figures: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for method in args.methods:
            (folder / method).mkdir()
            rig = CorralRig(folder / method, method)
            try:
                rates = alternate(args.rounds, measures(rig, args.count, folder))
                settle()
                empty = rig.rate(args.count, 1, THREADS, label="table", way="futures")
                rig.fill(args.full_table)
                settle()
                full = rig.rate(args.count, 1, THREADS, forget=False, label="table",
                                way="futures")
                if args.profile is not None:
                    profile(rig, args.count, args.profile / method, args.profile_seconds,
                            args.profile_way)
            finally:
                rig.close()
            figures[method] = rates
            print(f"--spawn {method}")
            print(f"  baseline, raw os.posix_spawnp loop:  {spread(rates['raw'], ' /s')}")
            for label, values in rates.items():
                if label == "raw":
                    continue
                ratios = [v / r for v, r in zip(values, rates["raw"], strict=True)]
                print(f"  corral {label:<40} {spread(values, ' /s')}, "
                      f"{spread(ratios, ' %', 100)} of the baseline")
                print(f"    {rig.costs[label]}")
                if method == "posix" and label != "exec, 1 in flight":
                    goals.append(goal(f"spawn rate, {label} / raw posix_spawnp loop",
                                      100 * statistics.median(ratios), 80, " %",
                                      higher_is_better=True))
            print(f"  exec, {THREADS} in flight, with {args.full_table:,} ended processes in the "
                  f"client's table: {full:,.0f} /s; with none: {empty:,.0f} /s "
                  f"({100 * full / empty:.0f} %)", flush=True)
            figures[method]["full_table"] = [full]
            figures[method]["empty_table"] = [empty]
    print("goal: corral (default method, posix) >= 80 % of the baseline with requests in "
          "flight")
    record("spawn_rate", figures, goals)


if __name__ == "__main__":
    main()
