"""Copy over real, slow links: 100 MiB to 1 node and to N nodes, each host in its own
network namespace behind a link shaped to 100 Mbit/s with ``tc tbf`` (both directions),
all joined by a bridge; the master in a namespace of its own. The master's egress is read
from its link's interface counters, so it counts every byte it put on the wire.

A copy to N nodes goes through a chain of them (the master sends each byte once, to the
first node, and each node forwards it to the next); the same run measures it as a star
(``--star``: the master sends each byte to each node) for the baseline. Goal for the chain:
N nodes within 1.3x one node, and master egress about 1x the file.

The shaping (``shape``): tbf at the rate, a 64 KiB bucket (5 ms at 100 Mbit/s) and at most
50 ms of queue (about 690 KB), on the host's end of its link and on the bridge's end, with
pfifo_fast under it. Each copy also records when each node's data stopped arriving (from
its link's counters) and when its file was last written: ``--timeline`` prints them, and
how long each node finished after the one before it, the chain's cost per hop, is always
printed.

    sudo .venv/bin/python bench/shaped_copy.py [--size-mib 100] [--nodes 10] [--rate 100mbit]
        [--rounds N] [--no-star] [--timeline] [--frame-kib K]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
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

from bench.rig import TOKEN, goal, record, spread, write_token  # noqa: E402
from common.argtypes import positive_int  # noqa: E402
from master import chain  # noqa: E402
from master.api import MasterAPI  # noqa: E402
from master.server import MasterConfig  # noqa: E402
from tests.test_multihost import NetLab, start_master_inside  # noqa: E402


def shape(lab: NetLab, rate: str) -> None:
    """A token bucket on both ends of every host's link: what leaves the host, and what
    the bridge sends to it. Under it, pfifo_fast, a host's default queue here, whose bands
    follow the traffic class (``common.traffic_class``): under tbf's own single FIFO, a
    chained copy's data link keeps the queue full and a node's heartbeats are dropped
    from it again and again, until the master takes the node for gone."""
    tbf = ["root", "handle", "1:", "tbf", "rate", rate, "burst", "64kb", "latency", "50ms"]
    fair = ["parent", "1:1", "pfifo_fast"]
    for index, host in enumerate(lab.hosts, 1):
        inner = f"p{lab.tag}{index}"
        for qdisc in (tbf, fair):
            subprocess.run(["ip", "netns", "exec", lab.namespaces[host], "tc", "qdisc",
                            "add", "dev", inner, *qdisc], check=True, capture_output=True)
            subprocess.run(["tc", "qdisc", "add", "dev", lab.host_links[host], *qdisc],
                           check=True, capture_output=True)


def counter(link: str, name: str) -> int:
    return int(Path(f"/sys/class/net/{link}/statistics/{name}").read_text())


def master_egress(lab: NetLab) -> int:
    """Bytes the master has sent: what its link's bridge end has received."""
    return counter(lab.host_links["master"], "rx_bytes")


class LinkWatch(threading.Thread):
    """When the data stopped flowing on each link during one copy: the master's outbound
    (what passed its shaper) and each node's inbound (what the bridge's shaper let through
    to it). The last poll at which a link ran faster than ``BUSY`` is when its data
    ended: its acknowledgements and heartbeats alone stay far below that."""

    POLL = 0.01
    BUSY = 3e6  # bytes/s: a quarter of what 100 Mbit/s carries

    def __init__(self, lab: NetLab, hosts: list[str]) -> None:
        super().__init__(daemon=True)
        self.links = {"master": (lab.host_links["master"], "rx_bytes")}
        self.links.update({host: (lab.host_links[host], "tx_bytes") for host in hosts})
        self.ended: dict[str, float] = {}
        self._done = threading.Event()

    def run(self) -> None:
        then = time.time()
        last = {name: counter(*link) for name, link in self.links.items()}
        while not self._done.wait(self.POLL):
            now = time.time()
            for name, link in self.links.items():
                value = counter(*link)
                if value - last[name] > self.BUSY * (now - then):
                    self.ended[name] = now
                last[name] = value
            then = now

    def stop(self) -> None:
        self._done.set()
        self.join()


def cpu_seconds(pid: int) -> float:
    """User and system time of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, every core."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = values[3] + values[4]
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(values) - idle) / tick, sum(values) / tick


def start_client(lab: NetLab, host: str, folder: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["ip", "netns", "exec", lab.namespaces[host], sys.executable, "-m", "client",
         "--master", f"{lab.addresses['master']}:{port}", "--name", host,
         "--token-file", str(folder / "token"), "--state-dir", str(folder / host)],
        cwd=ROOT, stderr=subprocess.DEVNULL)


@dataclasses.dataclass
class Copy:
    """One timed copy: how long it took, what the master sent, and when each node's data
    stopped arriving (``arrived``) and its file was last written (``written``), in seconds
    from the start."""

    seconds: float
    egress: int
    master_sent: float
    arrived: dict[str, float]
    written: dict[str, float]
    cpu: dict[str, float]  # CPU seconds of each process ("master": the bench's own)
    busy: float  # the machine's CPU use over the copy, as a share of all its cores

    def lags(self, hosts: list[str]) -> list[float]:
        """How long after the one before it each node's data stopped arriving (the first
        node: after the master's)."""
        ends = [self.master_sent, *(self.arrived[host] for host in hosts)]
        return [later - earlier for earlier, later in itertools.pairwise(ends)]


def timed_copy(api: MasterAPI, lab: NetLab, pids: dict[str, int], hosts: list[str],
               folder: Path, source: Path, dest: str, star: bool = False) -> Copy:
    before = master_egress(lab)
    processes = {"master": os.getpid(), **pids}
    cpu = {name: cpu_seconds(pid) for name, pid in processes.items()}
    busy, total = machine_busy()
    watch = LinkWatch(lab, hosts)
    watch.start()
    started = time.time()
    nodeset = ",".join(hosts)
    try:
        group = api.copy(nodeset, [str(source)], dest, star=star)
    finally:
        watch.stop()
    elapsed = time.time() - started
    busy_after, total_after = machine_busy()
    cpu = {name: cpu_seconds(pid) - cpu[name] for name, pid in processes.items()}
    assert group.ok, group.errors
    written = {}
    for host in hosts:
        landed = folder / host / "work" / dest
        written[host] = landed.stat().st_mtime - started
        landed.unlink()  # 100 MiB a node a round: the disk is shared
    return Copy(elapsed, master_egress(lab) - before,
                watch.ended.get("master", started) - started,
                {host: watch.ended.get(host, started) - started for host in hosts}, written,
                cpu, (busy_after - busy) / (total_after - total))


def show_timeline(copy: Copy, hosts: list[str]) -> None:
    lags = copy.lags(hosts)
    print(f"    master sent its last byte at {copy.master_sent:6.2f} s")
    for host, lag in zip(hosts, lags, strict=True):
        print(f"    {host:>4}: data in at {copy.arrived[host]:6.2f} s (+{lag:.2f} s), "
              f"written at {copy.written[host]:6.2f} s")
    print(f"    last answer {copy.seconds - copy.arrived[hosts[-1]]:.2f} s after the last "
          f"node's data; CPU: the machine {100 * copy.busy:.0f} % busy (all cores), master "
          f"{copy.cpu['master']:.2f} s, nodes "
          + " ".join(f"{copy.cpu[host]:.2f}" for host in hosts) + " s")


def report(args: argparse.Namespace, hosts: list[str], ones: list[Copy], chains: list[Copy],
           star: Copy | None) -> None:
    size = args.size_mib << 20
    one = statistics.median(copy.seconds for copy in ones)
    ratios = [c.seconds / o.seconds for c, o in zip(chains, ones, strict=True)]
    # the first node's lag is the master's own pace; a hop is one node to the next
    hops = [lag for copy in chains for lag in copy.lags(hosts)[1:]]
    print(f"{args.size_mib} MiB over links shaped to {args.rate} (tc tbf), master and "
          f"{args.nodes} nodes in network namespaces, chain frames of {args.frame_kib} KiB, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"  to 1 node:                {spread([c.seconds for c in ones], ' s', digits=2)}  "
          f"{size / one / 1e6:5.1f} MB/s  master egress {ones[0].egress / size:.2f}x the file")
    print(f"  to {args.nodes} nodes, chain:       "
          f"{spread([c.seconds for c in chains], ' s', digits=2)}  "
          f"({spread(ratios, 'x', digits=2)} one node of the same round)  master egress "
          f"{chains[0].egress / size:.2f}x the file")
    if hops:
        print(f"  each node's data done after the one before it: "
              f"{spread(hops, ' ms', 1000)}")
    if star is not None:
        print(f"  to {args.nodes} nodes, star (--star): {star.seconds:6.1f} s  "
              f"({star.seconds / one:.2f}x one node)  master egress "
              f"{star.egress / size:.2f}x the file  (baseline)")
    print("goal for the chain: N nodes <= 1.3x one node, master egress about 1x the file")
    if args.timeline:
        for round_, (one_copy, copy) in enumerate(zip(ones, chains, strict=True), 1):
            print(f"  round {round_}: one node {one_copy.seconds:.2f} s (machine "
                  f"{100 * one_copy.busy:.0f} % busy), chain {copy.seconds:.2f} s")
            show_timeline(copy, hosts)
    record("shaped_copy", {
        "size_mib": args.size_mib, "nodes": args.nodes, "rate": args.rate,
        "frame_kib": args.frame_kib, "one_node_s": [c.seconds for c in ones],
        "chain_s": [c.seconds for c in chains], "hop_s": hops,
        "star_s": None if star is None else star.seconds,
        "chain_egress_x": chains[0].egress / size},
        [goal(f"copy to {args.nodes} nodes through a chain / to 1 node, shaped links",
              statistics.median(ratios), 1.3),
         goal("chain: master egress / file size", chains[0].egress / size, 1.1)])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=100)
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--rate", default="100mbit")
    parser.add_argument("--rounds", type=positive_int, default=1,
                        help="one node then the chain, this many times (median and spread)")
    parser.add_argument("--no-star", action="store_true",
                        help="skip the star baseline (N times slower than the chain)")
    parser.add_argument("--frame-kib", type=positive_int, default=chain.CHUNK >> 10,
                        help="the chain's frame size (each node forwards a frame once it has "
                        "it whole)")
    parser.add_argument("--timeline", action="store_true",
                        help="when each node's data arrived and was written, per chain copy")
    args = parser.parse_args()
    chain.CHUNK = args.frame_kib << 10
    size = args.size_mib << 20
    hosts = [f"h{i}" for i in range(1, args.nodes + 1)]
    lab = NetLab(["master", *hosts])
    clients: list[subprocess.Popen[bytes]] = []
    try:
        lab.up()
        shape(lab, args.rate)
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        lab.down()
        raise SystemExit(f"cannot build shaped namespaces here (needs root, ip, tc): {exc}"
                         ) from None
    with tempfile.TemporaryDirectory(dir=ROOT / "logs") as tmp:
        folder = Path(tmp)
        source = folder / "source.bin"
        source.write_bytes(os.urandom(size))
        write_token(folder)
        api = start_master_inside(
            lab, MasterConfig(host=lab.addresses["master"], port=0, log_dir=folder),
            TOKEN.encode())
        try:
            clients = [start_client(lab, host, folder, api.address[1]) for host in hosts]
            assert api.wait_ready(args.nodes, 60).reached
            pids = {host: client.pid for host, client in zip(hosts, clients, strict=True)}
            ones: list[Copy] = []
            chains: list[Copy] = []
            for _ in range(args.rounds):
                ones.append(timed_copy(api, lab, pids, hosts[:1], folder, source, "one.bin"))
                chains.append(timed_copy(api, lab, pids, hosts, folder, source, "chain.bin"))
            star = None if args.no_star else timed_copy(api, lab, pids, hosts, folder, source,
                                                        "star.bin", star=True)
            report(args, hosts, ones, chains, star)
        finally:
            for client in clients:
                client.terminate()
            for client in clients:
                client.wait()
            api.shutdown()
            lab.down()


if __name__ == "__main__":
    main()
