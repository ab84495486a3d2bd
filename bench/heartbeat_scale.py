"""Master CPU and memory with many clients heartbeating at 1 Hz.

Simulated clients run in two helper processes, each holding half the connections as
greenlets; they use the client's own handshake code and send real heartbeat frames, and
answer the master's round-trip pings. Baseline, in the same run: a bare gevent server that
reads every frame with the same ``FrameReader`` (which unpacks each body's msgpack map,
about 0.7 µs of its 14 µs a frame) and drops it: no MAC (its simulators skip the
handshake), no message checks, no registry, no pings. That is the floor that framing and
the event loop cost on this machine. The two alternate (``--rounds``).

The simulators count the heartbeats they send: on two cores shared with other work they
are slowed too, and then deliver fewer than one per client per second, which makes any
server look cheaper. So besides the CPU share, each side's CPU time per heartbeat
delivered is printed, and the ratio to the baseline is taken on that.

    .venv/bin/python bench/heartbeat_scale.py [--counts 1000 10000] [--window 10]
        [--rounds 1] [--profile FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.rig import goal, record, settle, spread  # noqa: E402

TOKEN = "bench-token"


# --- the simulated clients (run as a helper process) ---------------------------------------

def simulate(host: str, port: int, count: int, prefix: str, raw: bool, tally: Path) -> None:
    import gevent
    import gevent.lock
    import gevent.socket

    from client.protocol import Identity, handshake
    from common.errors import CorralError
    from common.fdlimit import raise_soft_limit
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

    def connect(index: int) -> FrameChannel:
        """Connected (and registered), retrying as a real client does: in a storm of
        10,000 on busy cores a handshake can outlast the master's timeout."""
        while True:
            try:
                channel = FrameChannel(gevent.socket.create_connection((host, port)))
                if not raw:
                    name = f"{prefix}{index}"
                    handshake(channel, Identity(node_id=f"{name:0>32}"[-32:], name=name,
                                                host="sim"), TOKEN.encode())
                return channel
            except (OSError, CorralError):
                gevent.sleep(random.uniform(0.5, 2))

    def one(index: int) -> None:
        gevent.sleep(random.uniform(0, 2))  # spread the connection storm over 2 s
        channel = connect(index)
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

    raise_soft_limit()  # thousands of sockets: 1,024 open files would not do
    sent = [0]

    def beat(send: Callable[[Message], None]) -> None:
        seq = 0
        gevent.sleep(random.uniform(0, 1))
        while True:
            seq += 1
            sent[0] += 1
            send(Heartbeat(seq=seq, load=[0.1, 0.2, 0.3], cpu_percent=1.5,
                           mem_available=1 << 33, mem_total=1 << 34, disk_free=1 << 36,
                           processes=3))
            gevent.sleep(1.0)

    def keep_tally() -> None:
        while True:
            tally.with_suffix(".tmp").write_text(str(sent[0]))
            tally.with_suffix(".tmp").replace(tally)
            gevent.sleep(0.25)

    greenlets = [gevent.spawn(one, i) for i in range(count)]
    greenlets.append(gevent.spawn(keep_tally))
    print("started", flush=True)
    gevent.joinall(greenlets, raise_error=True)


# --- the baseline server (run as a helper process) -----------------------------------------

def bare_server(port_file: str) -> None:
    from gevent.server import StreamServer

    from common.fdlimit import raise_soft_limit
    from common.framing import FrameReader

    raise_soft_limit()

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

PROFILE: Path | None = None  # --profile: py-spy's samples of the master over the window


@dataclasses.dataclass(frozen=True)
class Window:
    cpu_percent: float  # of one core
    rss_mib: float
    beats_per_s: float  # heartbeats the simulators sent

    @property
    def us_per_beat(self) -> float:
        return self.cpu_percent * 1e4 / max(self.beats_per_s, 1.0)


def sent(tallies: list[Path]) -> int:
    return sum(int(path.read_text() or 0) for path in tallies if path.exists())


def measure(pid: int, window: float, tallies: list[Path], profile: Path | None = None
            ) -> Window:
    process = psutil.Process(pid)
    spy = None
    if profile is not None:  # the sampler's own CPU is its own process's, not the master's
        spy = subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record",
                                "--pid", str(pid), "--duration", str(int(window)),
                                "--rate", "200", "--threads", "--format", "raw", "--output",
                                str(profile)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    before, beats_before, started = process.cpu_times(), sent(tallies), time.monotonic()
    time.sleep(window)
    after, beats_after = process.cpu_times(), sent(tallies)
    elapsed = time.monotonic() - started
    if spy is not None:
        spy.wait()
    busy = (after.user - before.user) + (after.system - before.system)
    return Window(100.0 * busy / elapsed, process.memory_info().rss / 2**20,
                  (beats_after - beats_before) / elapsed)


def start_sims(port: int, count: int, raw: bool, tmp: Path
               ) -> tuple[list[subprocess.Popen[bytes]], list[Path]]:
    halves = [count // 2, count - count // 2]
    sims, tallies = [], []
    for i, part in enumerate(halves):
        tally = tmp / f"sent-{i}"
        tally.unlink(missing_ok=True)
        tallies.append(tally)
        sims.append(subprocess.Popen(
            [sys.executable, __file__, "--simulate", str(port), str(part), f"s{i}-",
             "raw" if raw else "corral", str(tally)], stdout=subprocess.PIPE))
    return sims, tallies


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.kill()
        process.wait()


def run_corral(count: int, window: float, tmp: Path) -> Window:
    token = tmp / "token"
    token.write_text(TOKEN)
    master = subprocess.Popen(
        [sys.executable, "-m", "master", "--port", "0", "--token-file", str(token),
         "--log-dir", str(tmp), "--state-dir", str(tmp / "state"),
         "--expect-nodes", str(count)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, cwd=ROOT)
    assert master.stdin and master.stdout and master.stderr
    line = master.stderr.readline()  # the master says where it listens on stderr,
    while line and "listening on " not in line:  # after any warning about the token file
        line = master.stderr.readline()
    port = int(line.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
    sims, tallies = start_sims(port, count, False, tmp)
    try:
        master.stdin.write(f"list --wait {count} --timeout 120\n")
        master.stdin.flush()
        while "READY" not in (row := master.stdout.readline()) and row:
            pass
        time.sleep(2)  # let the connection storm settle before the window opens
        return measure(master.pid, window, tallies,
                       None if PROFILE is None else PROFILE.with_suffix(f".{count}.txt"))
    finally:
        stop(sims)
        master.kill()
        master.wait()


def run_bare(count: int, window: float, tmp: Path) -> Window:
    port_file = tmp / "bare-port"
    port_file.unlink(missing_ok=True)
    server = subprocess.Popen([sys.executable, __file__, "--bare", str(port_file)])
    while not port_file.exists() or not port_file.read_text():
        time.sleep(0.05)
    sims, tallies = start_sims(int(port_file.read_text()), count, True, tmp)
    try:
        time.sleep(4)
        return measure(server.pid, window, tallies,
                       None if PROFILE is None else PROFILE.with_suffix(f".bare.{count}.txt"))
    finally:
        stop(sims)
        server.kill()
        server.wait()


def median_window(windows: list[Window]) -> Window:
    return Window(*(statistics.median(getattr(w, f.name) for w in windows)
                    for f in dataclasses.fields(Window)))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--simulate":
        _, _, port, count, prefix, mode, tally = sys.argv
        simulate("127.0.0.1", int(port), int(count), prefix, mode == "raw", Path(tally))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--bare":
        bare_server(sys.argv[2])
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--counts", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=1,
                        help="corral and the bare server alternately, this many times each")
    parser.add_argument("--profile", type=Path, metavar="FILE",
                        help="also sample the master with py-spy over each window into "
                             "FILE.COUNT.txt, and the bare server into FILE.bare.COUNT.txt "
                             "(collapsed stacks; bench/profile_top.py reads them)")
    args = parser.parse_args()
    global PROFILE
    PROFILE = args.profile
    print(f"heartbeat scale: clients at 1 Hz, CPU % of one core over {args.window:g} s, "
          f"{args.rounds} round(s) each, medians ({os.cpu_count()} cores, load "
          f"{os.getloadavg()[0]:.1f})")
    print(f"{'clients':>8}  {'':6}{'CPU %':>8} {'RSS MiB':>8} {'beats/s':>8} {'us/beat':>8}")
    figures: dict[str, list[float]] = {"clients": [], "master_cpu_percent": [],
                                       "master_rss_mib": [], "bare_cpu_percent": [],
                                       "bare_rss_mib": [], "ratio": []}
    goals = []
    with tempfile.TemporaryDirectory() as tmp:
        for count in args.counts:
            runs: dict[str, list[Window]] = {"corral": [], "bare": []}
            for round_number in range(args.rounds):
                order = ["corral", "bare"] if round_number % 2 == 0 else ["bare", "corral"]
                for side in order:
                    settle()
                    run = run_corral if side == "corral" else run_bare
                    runs[side].append(run(count, args.window, Path(tmp)))
            ratios = [c.us_per_beat / b.us_per_beat
                      for c, b in zip(runs["corral"], runs["bare"], strict=True)]
            for side, label in (("corral", "master"), ("bare", "bare")):
                w = median_window(runs[side])
                print(f"{count:>8}  {label:<6}{w.cpu_percent:>8.1f} {w.rss_mib:>8.0f} "
                      f"{w.beats_per_s:>8.0f} {w.us_per_beat:>8.1f}", flush=True)
            print(f"{'':>8}  master/bare CPU per heartbeat: {spread(ratios, 'x', digits=2)}; "
                  "goal 1.5x", flush=True)
            master, bare = median_window(runs["corral"]), median_window(runs["bare"])
            for key, value in zip(figures, (count, master.cpu_percent, master.rss_mib,
                                            bare.cpu_percent, bare.rss_mib,
                                            statistics.median(ratios)), strict=True):
                figures[key].append(value)
            goals.append(goal(f"{count:,} heartbeating clients: master CPU per heartbeat / "
                              "bare server's", statistics.median(ratios), 1.5, "x"))
            if count >= 10_000:
                goals.append(goal(f"{count:,} clients: master RSS", master.rss_mib, 250,
                                  " MiB"))
    record("heartbeat_scale", figures, goals)


if __name__ == "__main__":
    main()
