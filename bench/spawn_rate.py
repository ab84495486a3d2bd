"""Spawn rate of /bin/true on one client through corral, against raw posix_spawn.

Baseline, in the same run: a Python loop calling ``os.posix_spawnp`` for /bin/true with its
output on a log file, reaping with ``waitpid`` — what the client does, without corral.
Through corral: the master's API sends ``exec`` requests (16 in flight, from 16 threads) to
one real client process, each answered once the process is running; the run ends when every
exit has been reported back to the master. Measured one process per request, and 100 per
request (``exec -n 100``), with each spawn method.

    .venv/bin/python bench/spawn_rate.py [--count 2000]
"""

from __future__ import annotations

import argparse
import os
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


def corral_rate(count: int, folder: Path, method: str, batch: int = 1) -> float:
    token = folder / "token"
    token.write_text(TOKEN)
    ended = threading.Semaphore(0)

    def on_event(event: Event) -> None:
        if isinstance(event, ProcessEvent):
            ended.release()

    api = MasterAPI.start(MasterConfig(port=0, log_dir=folder), TOKEN.encode(),
                          listeners=[on_event])
    client = subprocess.Popen(
        [sys.executable, "-m", "client", "--master", f"127.0.0.1:{api.address[1]}", "--name",
         "n1", "--token-file", str(token), "--state-dir", str(folder / method),
         "--spawn", method], cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        assert api.wait_ready(1, 30).reached

        def worker(share: int) -> None:
            for _ in range(share):
                assert api.exec("n1", ["true"], count=batch).ok

        requests = count // batch // THREADS
        threads = [threading.Thread(target=worker, args=(requests,)) for _ in range(THREADS)]
        client_usage = psutil.Process(client.pid)
        master_before, client_before = os.times(), client_usage.cpu_times()
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        done = requests * THREADS * batch
        for _ in range(done):
            ended.acquire()
        elapsed = time.perf_counter() - started
        master_after, client_after = os.times(), client_usage.cpu_times()
        master_cpu = (master_after.user + master_after.system
                      - master_before.user - master_before.system)
        client_cpu = (client_after.user + client_after.system
                      - client_before.user - client_before.system)
        print(f"    ({method}, {batch} per request: master CPU "
              f"{1e6 * master_cpu / done:.0f} us, client CPU {1e6 * client_cpu / done:.0f} us "
              "per process)")
        return done / elapsed
    finally:
        client.terminate()
        client.wait()
        api.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        raw = raw_rate(args.count, folder)
        print(f"spawn rate of /bin/true, {args.count} processes ({os.cpu_count()} cores)")
        print(f"  baseline, raw os.posix_spawnp loop:   {raw:8.0f} /s")
        for method, batch in (("posix", 1), ("posix", 100), ("fork", 1), ("fork", 100)):
            rate = corral_rate(args.count, folder, method, batch)
            label = "exec" if batch == 1 else f"exec -n {batch}"
            print(f"  corral {label:<11} --spawn {method:<5}: {rate:8.0f} /s"
                  f"  ({100 * rate / raw:.0f} % of baseline)")
    print("goal: corral (default method) >= 80 % of the baseline")


if __name__ == "__main__":
    main()
