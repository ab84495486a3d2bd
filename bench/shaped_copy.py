"""Copy over real, slow links: 100 MiB to 1 node and to N nodes, each host in its own
network namespace behind a link shaped to 100 Mbit/s with ``tc tbf`` (both directions),
all joined by a bridge; the master in a namespace of its own. The master's egress is read
from its link's interface counters, so it counts every byte it put on the wire.

A copy to N nodes goes through a chain of them (the master sends each byte once, to the
first node, and each node forwards it to the next); the same run measures it as a star
(``--star``: the master sends each byte to each node) for the baseline. Goal for the chain:
N nodes within 1.3x one node, and master egress about 1x the file.

    sudo .venv/bin/python bench/shaped_copy.py [--size-mib 100] [--nodes 10] [--rate 100mbit]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.rig import TOKEN, write_token  # noqa: E402
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


def master_egress(lab: NetLab) -> int:
    """Bytes the master has sent: what its link's bridge end has received."""
    link = lab.host_links["master"]
    return int(Path(f"/sys/class/net/{link}/statistics/rx_bytes").read_text())


def start_client(lab: NetLab, host: str, folder: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["ip", "netns", "exec", lab.namespaces[host], sys.executable, "-m", "client",
         "--master", f"{lab.addresses['master']}:{port}", "--name", host,
         "--token-file", str(folder / "token"), "--state-dir", str(folder / host)],
        cwd=ROOT, stderr=subprocess.DEVNULL)


def timed_copy(api: MasterAPI, lab: NetLab, nodeset: str, source: Path, dest: str,
               star: bool = False) -> tuple[float, int]:
    before = master_egress(lab)
    started = time.perf_counter()
    group = api.copy(nodeset, [str(source)], dest, star=star)
    elapsed = time.perf_counter() - started
    assert group.ok, group.errors
    return elapsed, master_egress(lab) - before


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=100)
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--rate", default="100mbit")
    parser.add_argument("--no-star", action="store_true",
                        help="skip the star baseline (N times slower than the chain)")
    args = parser.parse_args()
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
            nodeset = f"h[1-{args.nodes}]"
            one, one_bytes = timed_copy(api, lab, "h1", source, "one.bin")
            chain, chain_bytes = timed_copy(api, lab, nodeset, source, "chain.bin")
            star = star_bytes = 0.0
            if not args.no_star:
                star, star_bytes = timed_copy(api, lab, nodeset, source, "star.bin", star=True)
            print(f"{args.size_mib} MiB over links shaped to {args.rate} (tc tbf), "
                  f"master and {args.nodes} nodes in network namespaces")
            print(f"  to 1 node:                {one:6.1f} s  {size / one / 1e6:5.1f} MB/s  "
                  f"master egress {one_bytes / size:.2f}x the file")
            print(f"  to {args.nodes} nodes, chain:       {chain:6.1f} s  "
                  f"({chain / one:.2f}x one node)  master egress {chain_bytes / size:.2f}x "
                  "the file")
            if star:
                print(f"  to {args.nodes} nodes, star (--star): {star:6.1f} s  "
                      f"({star / one:.2f}x one node)  master egress {star_bytes / size:.2f}x "
                      "the file  (baseline)")
            print("goal for the chain: N nodes <= 1.3x one node, master egress about 1x "
                  "the file")
        finally:
            for client in clients:
                client.terminate()
            for client in clients:
                client.wait()
            api.shutdown()
            lab.down()


if __name__ == "__main__":
    main()
