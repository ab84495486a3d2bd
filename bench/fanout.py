"""Fan-out latency: ``run true`` on 1, 10 and 100 nodes, until every exit code is back.

The nodes are real client processes on this machine, each forking ``/bin/sh -c true`` for
real. Timed from the API call to the gathered result (what the console prints from), over
repeated runs. Baseline, in the same run: the same number of ``/bin/sh -c true`` started
and reaped directly by one local Python process (no network, no corral). Each repeat runs
both, the order swapped every other time; medians, the 90th percentile and the ratio of
the medians are printed.

    .venv/bin/python bench/fanout.py [--nodes 1 10 50 100] [--repeat 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.rig import TOKEN, goal, record, start_client, stop_all, write_token  # noqa: E402
from master.api import MasterAPI  # noqa: E402
from master.server import MasterConfig  # noqa: E402


def local_floor(count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        os.posix_spawn("/bin/sh", ["/bin/sh", "-c", "true"], os.environ)
    for _ in range(count):
        os.waitpid(-1, 0)
    return time.perf_counter() - started


def fan_out(api: MasterAPI, target: str, count: int) -> float:
    started = time.perf_counter()
    group = api.run(target, "true", timeout=30)
    elapsed = time.perf_counter() - started
    assert group.ok and len(group.results) == count, group.errors
    assert all(r.exit_code == 0 for r in group.results.values())
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 10, 50, 100])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    most = max(args.nodes)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_token(folder)
        api = MasterAPI.start(MasterConfig(port=0, log_dir=folder), TOKEN.encode())
        clients = [start_client(folder, api.address[1], f"n{i}") for i in range(1, most + 1)]
        try:
            assert api.wait_ready(most, 300).reached, "clients did not all come up"
            print(f"fan-out of `run true` ({os.cpu_count()} cores, {args.repeat} runs each; "
                  "real client processes on this machine)")
            figures: dict[str, list[float]] = {"nodes": [], "median_ms": [], "p90_ms": [],
                                               "local_floor_ms": []}
            print(f"{'nodes':>6}  {'median ms':>10}  {'p90 ms':>8}  {'max ms':>8}  "
                  f"{'local spawn+reap, median ms':>28}  {'ratio':>6}")
            goals = []
            for count in args.nodes:
                target = f"n[1-{count}]" if count > 1 else "n1"
                times, floor = [], []
                for repeat in range(args.repeat):
                    if repeat % 2:
                        floor.append(local_floor(count))
                    times.append(fan_out(api, target, count))
                    if not repeat % 2:
                        floor.append(local_floor(count))
                times.sort()
                median, base = statistics.median(times), statistics.median(floor)
                p90 = times[int(0.9 * len(times)) - 1]
                print(f"{count:>6}  {1000 * median:>10.1f}  {1000 * p90:>8.1f}  "
                      f"{1000 * times[-1]:>8.1f}  {1000 * base:>28.1f}  {median / base:>5.2f}x",
                      flush=True)
                for key, value in (("nodes", count), ("median_ms", 1000 * median),
                                   ("p90_ms", 1000 * p90), ("local_floor_ms", 1000 * base)):
                    figures[key].append(value)
                if count >= 50:
                    goals.append(goal(f"run true on {count} nodes / local spawn floor",
                                      median / base, 1.3, "x"))
            print("goal: 50 and 100 nodes within 1.3x of the local spawn floor")
            record("fanout", figures, goals)
        finally:
            stop_all(clients)
            api.shutdown()


if __name__ == "__main__":
    main()
