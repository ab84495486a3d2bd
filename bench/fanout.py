"""Fan-out latency: ``run true`` on 1, 10 and 100 nodes, until every exit code is back.

The nodes are real client processes on this machine, each forking ``/bin/sh -c true`` for
real. Timed from the API call to the gathered result (what the console prints from), over
repeated runs. Baseline, in the same run: the same number of ``/bin/sh -c true`` started
and reaped directly by one local Python process (no network, no corral), as a client starts
a ``run`` command: stdin from /dev/null, stdout and stderr on pipes read to their end, a
session of its own (the ratio's floor); the bare floor beside it inherits the bench's own
output. Each repeat runs both, the order swapped every other time, with a pause after each
fan-out so that the master's delayed acknowledgements land outside both timings; medians,
the 90th percentile and the ratio of the medians are printed.

    .venv/bin/python bench/fanout.py [--nodes 1 10 50 100] [--repeat 20] [--profile DIR]

Beside each figure: the CPU time the clients (all of them) and this process (the master)
spent per node and run, from the kernel's counts over the timed fan-outs. ``--profile
DIR``: afterwards, fan-outs to the most nodes back to back while py-spy samples client n1
and the master (DIR/client.txt, DIR/master.txt; ``bench/profile_top.py`` reads them).
"""

from __future__ import annotations

import argparse
import os
import selectors
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.rig import TOKEN, goal, record, start_client, stop_all, write_token  # noqa: E402
from master.api import MasterAPI  # noqa: E402
from master.server import MasterConfig  # noqa: E402

ARGV = ["/bin/sh", "-c", "true"]
ACKS_OUT = 0.25  # seconds after a fan-out: the master's delayed acks (0.1 s) have gone


def bare_floor(count: int) -> float:
    """``count`` shells started, then reaped: output inherited, nothing read."""
    started = time.perf_counter()
    for _ in range(count):
        os.posix_spawn(ARGV[0], ARGV, os.environ)
    for _ in range(count):
        os.waitpid(-1, 0)
    return time.perf_counter() - started


def local_floor(count: int) -> float:
    """``count`` shells started as a client starts a ``run`` command (stdin /dev/null,
    stdout and stderr on pipes, own session), every pipe read to its end, every shell
    reaped."""
    started = time.perf_counter()
    readers = []
    with selectors.DefaultSelector() as selector:
        for _ in range(count):
            out_read, out_write = os.pipe2(os.O_CLOEXEC)
            err_read, err_write = os.pipe2(os.O_CLOEXEC)
            os.posix_spawn(ARGV[0], ARGV, os.environ, setsid=True, file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, out_write, 1), (os.POSIX_SPAWN_DUP2, err_write, 2)])
            os.close(out_write)
            os.close(err_write)
            for fd in (out_read, err_read):
                selector.register(fd, selectors.EVENT_READ)
                readers.append(fd)
        while readers:
            for key, _events in selector.select():
                if not os.read(key.fd, 65536):
                    selector.unregister(key.fd)
                    os.close(key.fd)
                    readers.remove(key.fd)
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


def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        times = process.cpu_times()
        total += times.user + times.system
    return total


def profile(api: MasterAPI, clients: list[subprocess.Popen[bytes]], count: int,
            folder: Path, seconds: int) -> None:
    """Fan out to ``count`` nodes back to back for ``seconds`` while py-spy samples client
    n1 and this process."""
    folder.mkdir(parents=True, exist_ok=True)
    spy = str(Path(sys.executable).with_name("py-spy"))
    samplers = [subprocess.Popen([spy, "record", "--pid", str(pid), "--duration", str(seconds),
                                  "--rate", "500", "--threads", "--format", "raw",
                                  "--output", str(folder / f"{who}.txt")],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                for who, pid in (("client", clients[0].pid), ("master", os.getpid()))]
    time.sleep(1.0)  # py-spy attaches
    target = f"n[1-{count}]" if count > 1 else "n1"
    deadline = time.monotonic() + seconds
    runs = 0
    while any(s.poll() is None for s in samplers) and time.monotonic() < deadline + 5:
        fan_out(api, target, count)
        runs += 1
    for sampler in samplers:
        sampler.wait()
    print(f"profiled {runs} fan-outs to {count} nodes: {folder}/client.txt, master.txt")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 10, 50, 100])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--profile", type=Path, metavar="DIR")
    parser.add_argument("--profile-seconds", type=int, default=10)
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
                                               "local_floor_ms": [], "bare_floor_ms": []}
            print(f"{'nodes':>6}  {'median ms':>10}  {'p90 ms':>7}  {'max ms':>7}  "
                  f"{'floor ms':>8}  {'ratio':>6}  {'bare ms':>7}  {'ratio':>6}  "
                  f"{'CPU ms/node: clients':>20}  {'master':>6}  load")
            client_processes = [psutil.Process(c.pid) for c in clients]
            master_process = psutil.Process()
            goals = []
            for count in args.nodes:
                target = f"n[1-{count}]" if count > 1 else "n1"
                times: list[float] = []
                floor: list[float] = []
                bare: list[float] = []
                client_cpu = master_cpu = 0.0

                def floors() -> None:
                    floor.append(local_floor(count))  # noqa: B023 (called in this loop)
                    bare.append(bare_floor(count))  # noqa: B023

                for repeat in range(args.repeat):
                    if repeat % 2:
                        floors()
                    clients_before = cpu_seconds(client_processes)
                    master_before = cpu_seconds([master_process])
                    times.append(fan_out(api, target, count))
                    client_cpu += cpu_seconds(client_processes) - clients_before
                    master_cpu += cpu_seconds([master_process]) - master_before
                    time.sleep(ACKS_OUT)
                    if not repeat % 2:
                        floors()
                times.sort()
                median, base = statistics.median(times), statistics.median(floor)
                bare_median = statistics.median(bare)
                p90 = times[int(0.9 * len(times)) - 1]
                print(f"{count:>6}  {1000 * median:>10.1f}  {1000 * p90:>7.1f}  "
                      f"{1000 * times[-1]:>7.1f}  {1000 * base:>8.1f}  {median / base:>5.2f}x  "
                      f"{1000 * bare_median:>7.1f}  {median / bare_median:>5.2f}x  "
                      f"{1000 * client_cpu / count / args.repeat:>20.2f}  "
                      f"{1000 * master_cpu / count / args.repeat:>6.2f}  "
                      f"{os.getloadavg()[0]:.1f}", flush=True)
                for key, value in (("nodes", count), ("median_ms", 1000 * median),
                                   ("p90_ms", 1000 * p90), ("local_floor_ms", 1000 * base),
                                   ("bare_floor_ms", 1000 * bare_median)):
                    figures[key].append(value)
                if count >= 50:
                    goals.append(goal(f"run true on {count} nodes / local spawn floor",
                                      median / base, 1.3, "x"))
            print("goal: 50 and 100 nodes within 1.3x of the local spawn floor")
            record("fanout", figures, goals)
            if args.profile is not None:
                profile(api, clients, most, args.profile, args.profile_seconds)
        finally:
            stop_all(clients)
            api.shutdown()


if __name__ == "__main__":
    main()
