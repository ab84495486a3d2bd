"""Master CPU and memory with many clients heartbeating at 1 Hz.

Simulated clients run in two helper processes, each holding half the connections as
greenlets; they use the client's own handshake code and send real heartbeat frames, and
answer the master's round-trip pings. Baseline, in the same run: a bare gevent server that
only reads and discards frames (no decoding, no registry, no handshake), the floor that
framing and the event loop cost on this machine.

    .venv/bin/python bench/heartbeat_scale.py [--counts 1000 5000] [--window 10]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.rig import record  # noqa: E402

TOKEN = "bench-token"


# --- the simulated clients (run as a helper process) ---------------------------------------

def simulate(host: str, port: int, count: int, prefix: str, raw: bool) -> None:
    import gevent
    import gevent.lock
    import gevent.socket

    from client.protocol import Identity, handshake
    from common.framing import FrameChannel
    from common.messages import Heartbeat, ListRequest, Message, Ping, Reply, decode
    from common.procs import ProcInfo

    # What a simulated node answers to `pid`: ten processes, some running, some ended.
    table = [ProcInfo(seq=i, pid=1000 + i, argv=["sim-job", f"--part={i}"], cwd="/sim",
                      log=f"/sim/logs/{i}-sim-job-{1000 + i}.log",
                      state="running" if i % 2 else "exited", started=time.time() - 60,
                      ended=None if i % 2 else time.time(), exit_code=None if i % 2 else 0,
                      rusage=None if i % 2 else {k: 1.0 for k in (
                          "ru_utime", "ru_stime", "ru_maxrss", "ru_minflt", "ru_majflt",
                          "ru_nvcsw", "ru_nivcsw")},
                      cpu_time=0.5 if i % 2 else None, rss=1 << 20 if i % 2 else None
                      ).to_wire() for i in range(10)]

    def one(index: int) -> None:
        gevent.sleep(random.uniform(0, 2))  # spread the connection storm over 2 s
        channel = FrameChannel(gevent.socket.create_connection((host, port)))
        if not raw:
            name = f"{prefix}{index}"
            handshake(channel, Identity(node_id=f"{name:0>32}"[-32:], name=name, host="sim"),
                      TOKEN.encode())
        lock = gevent.lock.Semaphore()  # frames are numbered: one sender at a time

        def send(message: Message) -> None:
            with lock:
                channel.send(message.to_wire())

        if raw:
            beat(send)
        gevent.spawn(beat, send)
        while True:
            message = decode(channel.read())
            if isinstance(message, Ping):
                send(Reply(req=message.req))
            elif isinstance(message, ListRequest):
                send(Reply(req=message.req, value=table))

    def beat(send: Callable[[Message], None]) -> None:
        seq = 0
        gevent.sleep(random.uniform(0, 1))
        while True:
            seq += 1
            send(Heartbeat(seq=seq, load=[0.1, 0.2, 0.3], cpu_percent=1.5,
                           mem_available=1 << 33, mem_total=1 << 34, disk_free=1 << 36,
                           processes=3))
            gevent.sleep(1.0)

    greenlets = [gevent.spawn(one, i) for i in range(count)]
    print("started", flush=True)
    gevent.joinall(greenlets, raise_error=True)


# --- the baseline server (run as a helper process) -----------------------------------------

def bare_server(port_file: str) -> None:
    from gevent.server import StreamServer

    from common.framing import FrameReader

    def handle(sock: object, _address: object) -> None:
        reader = FrameReader(sock)  # type: ignore[arg-type]
        try:
            while True:
                reader.read_frame()
        except Exception:
            return

    server = StreamServer(("127.0.0.1", 0), handle, backlog=2048)
    server.start()
    Path(port_file + ".tmp").write_text(str(server.server_port))
    os.replace(port_file + ".tmp", port_file)
    server.serve_forever()


# --- the measuring side --------------------------------------------------------------------

def measure(pid: int, window: float) -> tuple[float, float]:
    process = psutil.Process(pid)
    before = process.cpu_times()
    time.sleep(window)
    after = process.cpu_times()
    busy = (after.user - before.user) + (after.system - before.system)
    return 100.0 * busy / window, process.memory_info().rss / 2**20


def start_sims(port: int, count: int, raw: bool) -> list[subprocess.Popen[bytes]]:
    halves = [count // 2, count - count // 2]
    sims = []
    for i, part in enumerate(halves):
        sims.append(subprocess.Popen(
            [sys.executable, __file__, "--simulate", str(port), str(part), f"s{i}-",
             "raw" if raw else "corral"], stdout=subprocess.PIPE))
    return sims


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.kill()
        process.wait()


def run_corral(count: int, window: float, tmp: Path) -> tuple[float, float]:
    token = tmp / "token"
    token.write_text(TOKEN)
    master = subprocess.Popen(
        [sys.executable, "-m", "master", "--port", "0", "--token-file", str(token),
         "--log-dir", str(tmp)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, cwd=ROOT)
    assert master.stdin and master.stdout and master.stderr
    line = master.stderr.readline()  # the master says where it listens on stderr,
    while line and "listening on " not in line:  # after any warning about the token file
        line = master.stderr.readline()
    port = int(line.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
    sims = start_sims(port, count, raw=False)
    try:
        master.stdin.write(f"list --wait {count} --timeout 120\n")
        master.stdin.flush()
        while "READY" not in (row := master.stdout.readline()) and row:
            pass
        time.sleep(2)  # let the connection storm settle before the window opens
        return measure(master.pid, window)
    finally:
        stop(sims)
        master.kill()
        master.wait()


def run_bare(count: int, window: float, tmp: Path) -> tuple[float, float]:
    port_file = tmp / "bare-port"
    port_file.unlink(missing_ok=True)
    server = subprocess.Popen([sys.executable, __file__, "--bare", str(port_file)])
    while not port_file.exists() or not port_file.read_text():
        time.sleep(0.05)
    sims = start_sims(int(port_file.read_text()), count, raw=True)
    try:
        time.sleep(4)
        return measure(server.pid, window)
    finally:
        stop(sims)
        server.kill()
        server.wait()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--simulate":
        _, _, port, count, prefix, mode = sys.argv
        simulate("127.0.0.1", int(port), int(count), prefix, raw=mode == "raw")
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--bare":
        bare_server(sys.argv[2])
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--counts", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--window", type=float, default=10.0)
    args = parser.parse_args()
    print(f"heartbeat scale: clients at 1 Hz, CPU % of one core over {args.window:g} s "
          f"({os.cpu_count()} cores)")
    print(f"{'clients':>8}  {'corral master CPU %':>20}  {'RSS MiB':>8}  "
          f"{'bare server CPU %':>18}  {'RSS MiB':>8}")
    figures: dict[str, list[float]] = {"clients": [], "master_cpu_percent": [],
                                       "master_rss_mib": [], "bare_cpu_percent": [],
                                       "bare_rss_mib": []}
    with tempfile.TemporaryDirectory() as tmp:
        for count in args.counts:
            cpu, rss = run_corral(count, args.window, Path(tmp))
            bare_cpu, bare_rss = run_bare(count, args.window, Path(tmp))
            print(f"{count:>8}  {cpu:>20.1f}  {rss:>8.0f}  {bare_cpu:>18.1f}  {bare_rss:>8.0f}",
                  flush=True)
            for key, value in zip(figures, (count, cpu, rss, bare_cpu, bare_rss), strict=True):
                figures[key].append(value)
    print("goal: 5000 clients under 50 % of one core")
    record("heartbeat_scale", figures)


if __name__ == "__main__":
    main()
