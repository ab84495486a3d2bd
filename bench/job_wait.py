"""``wait J12`` latency: from the last exit of a job's processes to ``wait``'s result, a job
of one process on each of 10 nodes.

The nodes are real client processes on this machine. Each round starts ``sleep 0.2`` on
every node as one job, calls ``wait`` on the job at once, and takes the time from the
latest ``ended`` the clients recorded (wall clock, set when the client reaped the process)
to when ``wait`` returned. Baseline, in the same rounds: a ``pid`` of the same nodes (one
request to each and every answer back), the least any wait needs after an exit event.

    .venv/bin/python bench/job_wait.py [--nodes 10] [--repeat 20]
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

from bench.rig import TOKEN, record, start_client, stop_all, write_token  # noqa: E402
from master.api import MasterAPI  # noqa: E402
from master.server import MasterConfig  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_token(folder)
        api = MasterAPI.start(MasterConfig(port=0, log_dir=folder), TOKEN.encode())
        clients = [start_client(folder, api.address[1], f"n{i}")
                   for i in range(1, args.nodes + 1)]
        target = f"n[1-{args.nodes}]"
        try:
            assert api.wait_ready(args.nodes, 300).reached, "clients did not all come up"
            latencies, asks = [], []
            for _ in range(args.repeat):
                group = api.exec(target, ["sleep", "0.2"])
                job = group.results["n1"][0].job
                results = api.wait([job], timeout=30)
                returned = time.time()
                assert all(r.ok for r in results), results
                latencies.append(returned - max(r.info.ended or 0 for r in results if r.info))
                started = time.perf_counter()
                api.processes(target)
                asks.append(time.perf_counter() - started)
                api.forget_ended(target)
            median, floor = statistics.median(latencies), statistics.median(asks)
            print(f"wait J on a job of {args.nodes} processes, one per node ({os.cpu_count()} "
                  f"cores, {args.repeat} rounds; real clients on this machine)")
            print(f"  last exit to wait's result: median {1000 * median:.1f} ms, "
                  f"max {1000 * max(latencies):.1f} ms")
            print(f"  baseline, pid of the same nodes: median {1000 * floor:.1f} ms")
            record("job_wait", {"nodes": args.nodes, "median_ms": 1000 * median,
                                "max_ms": 1000 * max(latencies), "pid_ms": 1000 * floor})
        finally:
            stop_all(clients)
            api.shutdown()


if __name__ == "__main__":
    main()
