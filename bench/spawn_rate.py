"""Spawn rate of /bin/true on one client through corral, against raw posix_spawn.

Baseline, in the same run: a Python loop calling ``os.posix_spawnp`` for /bin/true with its
output on a log file, reaping with ``waitpid``: what the client does, without corral.
Through corral: the master's API sends ``exec`` requests to one real client process, each
answered once its processes are running; a measurement ends when every exit has been
reported back to the master. Measured one process per request with 1 request in flight
(back to back) and with 16 (from 16 threads), and 100 per request (``exec -n 100``, 16 in
flight), with each spawn method; the master's CPU time per request is printed.

This machine's speed drifts by up to 2x over minutes, so baseline and corral are measured
alternately (the order reversed every other round), settled before each, several rounds,
and the medians and spreads printed. Between measurements the client forgets its ended
processes: a table grown by tens of thousands of them made every ``fork`` copy a bigger
process, until ``exec -n 100`` timed out from the second round on. Then, per method, the
client's table is filled to the most ended processes a client keeps (``--keep-ended``,
10,000) and ``exec`` with 16 in flight measured again beside a measurement with an empty
table: a busy client must not slow down as its table fills.

    .venv/bin/python bench/spawn_rate.py [--count 3200] [--rounds 3] [--methods posix fork]
        [--full-table 10000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from bench.rig import alternate, goal, record, settle, spread  # noqa: E402
from client.proctable import KEEP_ENDED  # noqa: E402
from master.api import MasterAPI  # noqa: E402
from master.events import Event, ProcessEvent  # noqa: E402
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


class CorralRig:
    """A master (in this process) and one real client using spawn method ``method``."""

    def __init__(self, folder: Path, method: str) -> None:
        self.method = method
        token = folder / "token"
        token.write_text(TOKEN)
        self.ended = threading.Semaphore(0)
        self.api = MasterAPI.start(MasterConfig(port=0, log_dir=folder), TOKEN.encode(),
                                   listeners=[self._on_event])
        self.client = subprocess.Popen(
            [sys.executable, "-m", "client", "--master", f"127.0.0.1:{self.api.address[1]}",
             "--name", "n1", "--token-file", str(token), "--state-dir", str(folder / method),
             "--spawn", method], cwd=ROOT, stderr=subprocess.DEVNULL)
        assert self.api.wait_ready(1, 30).reached
        self.cpu = {"master": 0.0, "client": 0.0, "processes": 0, "requests": 0}

    def _on_event(self, event: Event) -> None:
        if isinstance(event, ProcessEvent):
            self.ended.release()

    def rate(self, count: int, batch: int, in_flight: int, forget: bool = True) -> float:
        """Processes a second; ``forget``: the client forgets them all afterwards."""
        requests = count // batch // in_flight
        done = requests * in_flight * batch

        failures: list[str] = []

        def worker() -> None:
            for _ in range(requests):
                group = self.api.exec("n1", ["true"], count=batch)
                if not group.ok:
                    failures.append(str(group.errors))
                    return

        threads = [threading.Thread(target=worker) for _ in range(in_flight)]
        client_usage = psutil.Process(self.client.pid)
        master_before, client_before = os.times(), client_usage.cpu_times()
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:  # their processes will never end: waiting for them would hang
            raise SystemExit(f"--spawn {self.method}: exec failed: {failures[0]}")
        for _ in range(done):
            self.ended.acquire()
        elapsed = time.perf_counter() - started
        master_after, client_after = os.times(), client_usage.cpu_times()
        self.cpu["master"] += (master_after.user + master_after.system
                               - master_before.user - master_before.system)
        self.cpu["client"] += (client_after.user + client_after.system
                               - client_before.user - client_before.system)
        self.cpu["processes"] += done
        self.cpu["requests"] += done // batch
        if forget:
            self.api.forget_ended("n1")  # the next measurement starts with a small client
        return done / elapsed

    def fill(self, count: int) -> None:
        """Leave ``count`` ended processes in the client's table."""
        for _ in range(count // 100):
            group = self.api.exec("n1", ["true"], count=100)
            if not group.ok:
                raise SystemExit(f"--spawn {self.method}: exec failed: {group.errors}")
        for _ in range(count // 100 * 100):
            self.ended.acquire()

    def per_process_cpu(self) -> str:
        n = self.cpu["processes"] or 1
        return (f"master {1e6 * self.cpu['master'] / n:.0f} us, "
                f"client {1e6 * self.cpu['client'] / n:.0f} us CPU per process; master "
                f"{1e6 * self.cpu['master'] / max(self.cpu['requests'], 1):.0f} us per request")

    def close(self) -> None:
        self.client.terminate()
        self.client.wait()
        self.api.shutdown()


def measures(rig: CorralRig, count: int, folder: Path) -> dict[str, Callable[[], float]]:
    return {"raw": lambda: raw_rate(count, folder),
            "exec, 1 in flight": lambda: rig.rate(count, 1, 1),
            f"exec, {THREADS} in flight": lambda: rig.rate(count, 1, THREADS),
            f"exec -n 100, {THREADS} in flight": lambda: rig.rate(count, 100, THREADS)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=3200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--full-table", type=int, default=KEEP_ENDED, metavar="N",
                        help="ended processes left in the client's table for the last "
                             "measurement (default: as many as a client keeps)")
    parser.add_argument("--methods", nargs="+", default=["posix", "fork"],
                        choices=["posix", "fork"])
    args = parser.parse_args()
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
                empty = rig.rate(args.count, 1, THREADS)
                rig.fill(args.full_table)
                settle()
                full = rig.rate(args.count, 1, THREADS, forget=False)
            finally:
                rig.close()
            figures[method] = rates
            print(f"--spawn {method} ({rig.per_process_cpu()})")
            print(f"  baseline, raw os.posix_spawnp loop:  {spread(rates['raw'], ' /s')}")
            for label, values in rates.items():
                if label == "raw":
                    continue
                ratios = [v / r for v, r in zip(values, rates["raw"], strict=True)]
                print(f"  corral {label:<28} {spread(values, ' /s')}, "
                      f"{spread(ratios, ' %', 100)} of the baseline")
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
