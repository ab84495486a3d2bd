"""Spawn rate of /bin/true on one client through corral, against raw posix_spawn.

Baseline, in the same run: a Python loop calling ``os.posix_spawnp`` for /bin/true with its
output on a log file, reaping with ``waitpid``: what the client does, without corral.
Through corral: the master's API sends ``exec`` requests (16 in flight, from 16 threads) to
one real client process, each answered once its processes are running; a measurement ends
when every exit has been reported back to the master. Measured one process per request and
100 per request (``exec -n 100``), with each spawn method.

This machine's speed drifts by up to 2x over minutes, so baseline and corral are measured
alternately, several rounds, and the medians are compared.

    .venv/bin/python bench/spawn_rate.py [--count 3200] [--rounds 3]
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

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
        self.cpu = {"master": 0.0, "client": 0.0, "processes": 0}

    def _on_event(self, event: Event) -> None:
        if isinstance(event, ProcessEvent):
            self.ended.release()

    def rate(self, count: int, batch: int) -> float:
        requests = count // batch // THREADS
        done = requests * THREADS * batch

        failures: list[str] = []

        def worker() -> None:
            for _ in range(requests):
                group = self.api.exec("n1", ["true"], count=batch)
                if not group.ok:
                    failures.append(str(group.errors))
                    return

        threads = [threading.Thread(target=worker) for _ in range(THREADS)]
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
        return done / elapsed

    def per_process_cpu(self) -> str:
        n = self.cpu["processes"] or 1
        return (f"master {1e6 * self.cpu['master'] / n:.0f} us, "
                f"client {1e6 * self.cpu['client'] / n:.0f} us CPU per process")

    def close(self) -> None:
        self.client.terminate()
        self.client.wait()
        self.api.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=3200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"spawn rate of /bin/true, {args.count} processes a measurement, median of "
          f"{args.rounds} alternating rounds ({os.cpu_count()} cores)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for method in ("posix", "fork"):
            (folder / method).mkdir()
            rig = CorralRig(folder / method, method)
            try:
                raw, single, batched = [], [], []
                for _ in range(args.rounds):
                    raw.append(raw_rate(args.count, folder))
                    single.append(rig.rate(args.count, 1))
                    batched.append(rig.rate(args.count, 100))
            finally:
                rig.close()
            base = statistics.median(raw)
            print(f"--spawn {method} ({rig.per_process_cpu()})")
            print(f"  baseline, raw os.posix_spawnp loop: {base:8.0f} /s")
            for label, rates in (("exec", single), ("exec -n 100", batched)):
                rate = statistics.median(rates)
                print(f"  corral {label:<12}               {rate:8.0f} /s"
                      f"  ({100 * rate / base:.0f} % of baseline)")
    print("goal: corral (default method, posix) >= 80 % of the baseline")


if __name__ == "__main__":
    main()
