"""How fast corral notices trouble and recovers, at default settings (1 s heartbeats).

- a client killed with SIGKILL: time until the master shows it GONE;
- a client stopped with SIGSTOP: time until it shows MISSING (by design: 3 missed
  heartbeats), and until READY after SIGCONT;
- the master killed and restarted on the same port: time until every client is READY;
- `pid` across 1,000 simulated nodes with 10 processes each: time for the answers, and
  for the console's table. The simulated nodes (bench/heartbeat_scale.py's helpers) use the
  client's own protocol code.

Baselines, in the same run: the heartbeat interval itself (the floor for noticing a silent
node), and one `pid` round trip to a single real node.

    .venv/bin/python bench/reliability.py [--clients 20] [--simulated 1000]
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.rig import TOKEN, start_client, write_token  # noqa: E402
from common.states import NodeState  # noqa: E402
from master import render  # noqa: E402
from master.api import MasterAPI  # noqa: E402
from master.server import MasterConfig  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--simulated", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_token(folder)
        config = MasterConfig(port=0, log_dir=folder)
        api = MasterAPI.start(config, TOKEN.encode())
        port = api.address[1]
        clients = {f"n{i}": start_client(folder, port, f"n{i}")
                   for i in range(1, args.clients + 1)}
        try:
            assert api.wait_ready(args.clients, 60).reached
            print(f"reliability figures, heartbeat {config.heartbeat:g} s "
                  f"({os.cpu_count()} cores)")
            killed = until_after(api, "n1", NodeState.GONE,
                                 lambda: clients["n1"].send_signal(signal.SIGKILL))
            print(f"  SIGKILLed client seen GONE after      {1000 * killed:8.1f} ms")
            stopped = until_after(api, "n2", NodeState.MISSING,
                                  lambda: os.kill(clients["n2"].pid, signal.SIGSTOP))
            print(f"  SIGSTOPped client seen MISSING after  {1000 * stopped:8.1f} ms  "
                  f"(baseline: 3 heartbeat intervals = {3000 * config.heartbeat:.0f} ms)")
            resumed = until_after(api, "n2", NodeState.READY,
                                  lambda: os.kill(clients["n2"].pid, signal.SIGCONT))
            print(f"  ... READY again after SIGCONT         {1000 * resumed:8.1f} ms")
            clients["n1"].wait()
            clients["n1"] = start_client(folder, port, "n1")
            assert api.wait_ready(args.clients, 60).reached
            api.shutdown()
            started = time.perf_counter()
            api = MasterAPI.start(MasterConfig(port=port, log_dir=folder), TOKEN.encode())
            assert api.wait_ready(args.clients, 60).reached
            print(f"  master restarted: all {args.clients} clients READY after "
                  f"{1000 * (time.perf_counter() - started):8.1f} ms")
        finally:
            for client in clients.values():
                client.kill()
                client.wait()
        api.shutdown()
        pid_across_simulated(folder, args.simulated)


def until_after(api: MasterAPI, name: str, state: NodeState, action: object) -> float:
    started = time.perf_counter()
    action()  # type: ignore[operator]
    while {n.name: n.state for n in api.nodes()}.get(name) is not state:
        time.sleep(0.005)
    return time.perf_counter() - started


def pid_across_simulated(folder: Path, count: int) -> None:
    api = MasterAPI.start(MasterConfig(port=0, log_dir=folder), TOKEN.encode())
    port = api.address[1]
    real = start_client(folder, port, "real1")
    halves = [count // 2, count - count // 2]
    sims = [subprocess.Popen([sys.executable, str(ROOT / "bench" / "heartbeat_scale.py"),
                              "--simulate", str(port), str(part), f"s{i}-", "corral"],
                             stdout=subprocess.DEVNULL) for i, part in enumerate(halves)]
    try:
        assert api.wait_ready(count + 1, 120).reached
        one = []
        for _ in range(20):
            started = time.perf_counter()
            assert api.processes("real1").ok
            one.append(time.perf_counter() - started)
        fetch, draw = [], []
        for _ in range(5):
            started = time.perf_counter()
            group = api.processes()
            fetched = time.perf_counter()
            table = render.process_table(group, time.time()).text
            fetch.append(fetched - started)
            draw.append(time.perf_counter() - fetched)
            assert group.ok and sum(len(p) for p in group.results.values()) == count * 10
        print(f"  pid on 1 real node (baseline):        {1000 * statistics.median(one):8.1f} ms")
        print(f"  pid across {count} simulated nodes x 10 processes: answers in "
              f"{1000 * statistics.median(fetch):.0f} ms, table of {len(table.splitlines())} "
              f"lines drawn in {1000 * statistics.median(draw):.0f} ms (median of 5)")
    finally:
        for sim in sims:
            sim.kill()
            sim.wait()
        real.kill()
        real.wait()
        api.shutdown()


if __name__ == "__main__":
    main()
