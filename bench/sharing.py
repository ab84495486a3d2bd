"""Barriers and shared variables, used from inside jobs as they are meant to be: each
participant is a process a real client started, calling through its client's job socket
(CORRAL_SOCKET), which forwards to the master.

1. A barrier of P processes over N nodes (P/N per node), ROUNDS times (the barrier's
   generations): from the arrival of the last (the master's clock, ``released_at``) to the
   moment the last of them has its answer (each process's own clock, same machine), in ms.
2. ``var cas`` from C processes at once on one variable (each increments it: read, cas
   old -> old+1), OPS in all: operations per second, and a check that the counter ends at
   the number of swaps.
Baselines measured in the same run: a call that does nothing (``node_names``) on the
master's control socket from this process, and through a job socket from inside a job
(one process alone, and C at once for the cas figure), so what the store and the barrier
add can be told from what the sockets and the forwarding cost.

    .venv/bin/python bench/sharing.py [--nodes 10] [--processes 100] [--rounds 5]
                                      [--cas-processes 20] [--cas-ops 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.rig import record, start_client, stop_all, write_token  # noqa: E402
from master.front.control import SocketBackend  # noqa: E402

# What each job process runs: the library's socket client, not the CLI, so the figures are
# the calls' and not Python's start-up.
PRELUDE = """
import json, os, sys, time
from pathlib import Path
from master.front.control import SocketBackend
job = SocketBackend(Path(os.environ["CORRAL_SOCKET"]), "client")
"""
BARRIER_JOB = PRELUDE + """
count, rounds = int(sys.argv[1]), int(sys.argv[2])
for n in range(rounds + 1):  # the last is not measured: it meets 100 interpreters' exits
    outcome = job.call("barrier", {"name": "bench", "count": count, "timeout": 300})
    print(json.dumps({"round": n, "released_at": outcome.released_at,
                      "answered": time.time()}))
"""
CAS_JOB = PRELUDE + """
count, ops, op = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
job.call("barrier", {"name": "cas-start-" + op, "count": count, "timeout": 300})
swapped = 0
old = None
started = time.time()
for _ in range(ops):
    if op == "cas":
        new = str(int(old or 0) + 1)
        outcome = job.call("var_cas", {"name": "counter", "old": old, "new": new})
        swapped += outcome.swapped
        old = outcome.current.value if outcome.current is not None else None
    else:
        job.call("node_names", {})
print(json.dumps({"started": started, "ended": time.time(), "swapped": swapped}))
"""


WAKE_JOB = """
import json, socket, sys, time
sock = socket.socket(socket.AF_UNIX)
sock.connect(sys.argv[1])
sock.recv(1)
print(json.dumps({"answered": time.time()}), flush=True)
sock.recv(1)  # exit only when told, as the barrier's processes go on to their next round
"""


def wake_floor(folder: Path, processes: int) -> float:
    """The floor under the barrier's figure: as many Python processes, each blocked on a
    socket of this process, all woken by one byte each; from the first byte sent to the
    last of them awake, in ms."""
    path = folder / "wake.sock"
    path.unlink(missing_ok=True)
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(processes)
    waiters = [subprocess.Popen([sys.executable, "-c", WAKE_JOB, str(path)],
                                stdout=subprocess.PIPE, text=True)
               for _ in range(processes)]
    connections = [server.accept()[0] for _ in range(processes)]
    time.sleep(0.5)  # let every one of them reach its recv
    released = time.time()
    for connection in connections:
        connection.send(b"x")
    answered = []
    for waiter in waiters:
        assert waiter.stdout is not None
        answered.append(json.loads(waiter.stdout.readline())["answered"])
    for connection in connections:
        connection.send(b"x")
        connection.close()
    for waiter in waiters:
        waiter.wait()
    server.close()
    return (max(answered) - released) * 1000


class Cluster:
    def __init__(self, folder: Path, nodes: int) -> None:
        token = write_token(folder)
        self.control = folder / "state" / "control.sock"
        os.environ["PYTHONPATH"] = str(ROOT)  # the jobs import corral's modules
        self.master = subprocess.Popen(
            [sys.executable, "-m", "master", "--no-console", "--port", "0", "--token-file",
             str(token), "--log-dir", str(folder), "--state-dir", str(folder / "state")],
            cwd=ROOT, stderr=subprocess.PIPE, text=True)
        assert self.master.stderr is not None
        line = self.master.stderr.readline()
        while "listening on" not in line:
            line = self.master.stderr.readline()
        port = int(line.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
        self.clients = [start_client(folder, port, f"n{i}") for i in range(1, nodes + 1)]
        self.backend = SocketBackend(self.control)
        self.nodes = nodes
        outcome = self.backend.call("wait_ready", {"count": nodes, "timeout": 300})
        if not outcome.reached:
            raise SystemExit(f"only {outcome.ready} of {nodes} clients came up")

    def run_jobs(self, per_node: list[int], code: str, *args: str) -> list[dict[str, Any]]:
        """Start ``per_node[i]`` copies of ``code`` on node i+1, wait for all, and return
        every JSON line they printed."""
        logs: list[str] = []
        refs: list[str] = []
        for index, copies in enumerate(per_node):
            if not copies:
                continue
            node = f"n{index + 1}"
            group = self.backend.call("exec", {
                "nodeset": node, "argv": [sys.executable, "-c", code, *args], "cwd": None,
                "env": {}, "stdin": None, "count": copies})
            for info in group.results[node]:
                refs.append(f"{node}:{info.pid}")
                logs.append(info.log)
        results = self.backend.call("wait", {"refs": refs, "timeout": 600})
        failed = [r.ref for r in results if not r.ok]
        if failed:
            raise SystemExit(f"jobs failed: {failed}; see {logs[refs.index(failed[0])]}")
        return [json.loads(line) for path in logs
                for line in Path(path).read_text().splitlines() if line.startswith("{")]

    def stop(self) -> None:
        stop_all(self.clients)
        self.master.terminate()
        self.master.wait()


def spread(total: int, nodes: int) -> list[int]:
    return [total // nodes + (1 if i < total % nodes else 0) for i in range(nodes)]


def control_round_trip(backend: SocketBackend, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        backend.call("node_names", {})
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--processes", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cas-processes", type=int, default=20)
    parser.add_argument("--cas-ops", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp:
        cluster = Cluster(Path(tmp), args.nodes)
        try:
            measure(cluster, args, Path(tmp))
        finally:
            cluster.stop()


def measure(cluster: Cluster, args: argparse.Namespace, folder: Path) -> None:
    print(f"barriers and shared variables from inside jobs ({os.cpu_count()} cores, "
          f"{args.nodes} real clients on this machine)")
    control_ms = control_round_trip(cluster.backend, 200)
    print(f"  baseline: a call doing nothing on the control socket      median "
          f"{control_ms:7.2f} ms")
    alone = cluster.run_jobs([1], CAS_JOB, "1", "200", "none")[0]
    forwarded_ms = (alone["ended"] - alone["started"]) / 200 * 1000
    print(f"  baseline: the same call from a job, through its client    mean   "
          f"{forwarded_ms:7.2f} ms")

    lines = cluster.run_jobs(spread(args.processes, args.nodes), BARRIER_JOB,
                             str(args.processes), str(args.rounds))
    latencies = []
    for n in range(args.rounds):
        this_round = [line for line in lines if line["round"] == n]
        released = this_round[0]["released_at"]
        latencies.append((max(line["answered"] for line in this_round) - released) * 1000)
    print(f"  barrier of {args.processes} processes over {args.nodes} nodes, last arrival to "
          f"release of all: median {statistics.median(latencies):7.2f} ms   "
          f"(rounds: {', '.join(f'{ms:.1f}' for ms in latencies)})")

    floor = statistics.median(wake_floor(folder, args.processes) for _ in range(3))
    print(f"  baseline: {args.processes} Python processes on this machine woken by one byte "
          f"each, first byte to last awake: median {floor:7.2f} ms")

    per_process = args.cas_ops // args.cas_processes
    rates = {}
    for op in ("none", "cas"):
        ran = cluster.run_jobs(spread(args.cas_processes, args.nodes), CAS_JOB,
                               str(args.cas_processes), str(per_process), op)
        elapsed = max(r["ended"] for r in ran) - min(r["started"] for r in ran)
        rates[op] = per_process * len(ran) / elapsed
        if op == "cas":
            swapped = sum(r["swapped"] for r in ran)
            final = cluster.backend.call("var_get", {"name": "counter", "wait": False,
                                                     "timeout": None}).value
            print(f"  var cas from {len(ran)} processes at once, {per_process * len(ran)} "
                  f"ops: {rates[op]:7.0f} /s   ({swapped} swapped; counter ends at "
                  f"{final}: {'right' if int(final) == swapped else 'WRONG'})")
        else:
            print(f"  baseline: {len(ran)} processes at once, calls doing nothing through "
                  f"their clients: {rates[op]:7.0f} /s")
    record("sharing", {"control_ms": control_ms, "forwarded_ms": forwarded_ms,
                       "barrier_processes": args.processes, "barrier_nodes": args.nodes,
                       "barrier_release_ms": statistics.median(latencies),
                       "wake_floor_ms": floor,
                       "cas_per_s": rates["cas"], "noop_per_s": rates["none"]})


if __name__ == "__main__":
    main()
