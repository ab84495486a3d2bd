"""A client at rest: its CPU share and memory while it only heartbeats (1 Hz), connected
to a master in this process.

Baseline, in the same run: ``python3 -c "import time; [time.sleep(1) for _ in ...]"``, a
process that wakes once a second and does nothing, measured over the same window: the
floor of being a Python process that is alive at all.

    .venv/bin/python bench/client_idle.py [--clients 3] [--window 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.rig import TOKEN, goal, record, spread, start_client, stop_all, write_token  # noqa: E402
from master.api import MasterAPI  # noqa: E402
from master.server import MasterConfig  # noqa: E402

SLEEPER = "import time\nwhile True:\n    time.sleep(1)\n"


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--window", type=float, default=30.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_token(folder)
        api = MasterAPI.start(MasterConfig(port=0, log_dir=folder), TOKEN.encode())
        clients = [start_client(folder, api.address[1], f"n{i}")
                   for i in range(1, args.clients + 1)]
        sleeper = subprocess.Popen([sys.executable, "-c", SLEEPER])
        try:
            if not api.wait_ready(args.clients, 60).reached:
                raise SystemExit("the clients did not connect")
            time.sleep(5)  # past start-up: imports, first psutil figures, first pings
            watched = [psutil.Process(c.pid) for c in clients]
            floor = psutil.Process(sleeper.pid)
            before = [cpu_seconds(p) for p in watched]
            floor_before, started = cpu_seconds(floor), time.monotonic()
            time.sleep(args.window)
            elapsed = time.monotonic() - started
            shares = [100 * (cpu_seconds(p) - b) / elapsed
                      for p, b in zip(watched, before, strict=True)]
            floor_share = 100 * (cpu_seconds(floor) - floor_before) / elapsed
            rss = [p.memory_info().rss / 2**20 for p in watched]
            floor_rss = floor.memory_info().rss / 2**20
        finally:
            sleeper.kill()
            sleeper.wait()
            stop_all(clients)
            api.shutdown()
    print(f"a client at rest, heartbeat 1 s, {args.clients} clients over {args.window:g} s "
          f"({os.cpu_count()} cores, load {os.getloadavg()[0]:.1f})")
    print(f"  client CPU:  {spread(shares, ' % of a core', digits=3)}")
    print(f"  client RSS:  {spread(rss, ' MiB', digits=1)}")
    print(f"  baseline, a Python process waking once a second: {floor_share:.3f} % of a "
          f"core, {floor_rss:.1f} MiB")
    print("goal: under 0.5 % of a core")
    record("client_idle", {"cpu_percent": shares, "rss_mib": rss,
                           "floor_cpu_percent": floor_share, "floor_rss_mib": floor_rss},
           [goal("a client at rest: CPU", statistics.median(shares), 0.5, " % of a core")])


if __name__ == "__main__":
    main()
