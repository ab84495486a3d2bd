"""Copy over real, slow links: 100 MiB to 1 node and to N nodes, each host in its own
network namespace behind a link shaped to 100 Mbit/s with ``tc tbf`` (both directions),
all joined by a bridge; the master in a namespace of its own. The master's egress is read
from its link's interface counters, so it counts every byte it put on the wire.

Today every copy is a star (the master sends each byte to each node), so N nodes cost
about N times one node and N times the file in master egress; issue 13's pipelined
distribution (not built yet) aims at N nodes within 1.3x one node, and 1x the file.

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
    the bridge sends to it."""
    for index, host in enumerate(lab.hosts, 1):
        inner = f"p{lab.tag}{index}"
        tbf = ["root", "tbf", "rate", rate, "burst", "64kb", "latency", "50ms"]
        subprocess.run(["ip", "netns", "exec", lab.namespaces[host], "tc", "qdisc", "add",
                        "dev", inner, *tbf], check=True, capture_output=True)
        subprocess.run(["tc", "qdisc", "add", "dev", lab.host_links[host], *tbf], check=True,
                       capture_output=True)


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


def timed_copy(api: MasterAPI, lab: NetLab, nodeset: str, source: Path, dest: str
               ) -> tuple[float, int]:
    before = master_egress(lab)
    started = time.perf_counter()
    group = api.copy(nodeset, [str(source)], dest)
    elapsed = time.perf_counter() - started
    assert group.ok, group.errors
    return elapsed, master_egress(lab) - before


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=100)
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--rate", default="100mbit")
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
            one, one_bytes = timed_copy(api, lab, "h1", source, "one.bin")
            many, many_bytes = timed_copy(api, lab, f"h[1-{args.nodes}]", source, "many.bin")
            print(f"{args.size_mib} MiB over links shaped to {args.rate} (tc tbf), "
                  f"master and {args.nodes} nodes in network namespaces")
            print(f"  to 1 node:   {one:6.1f} s  {size / one / 1e6:5.1f} MB/s  "
                  f"master egress {one_bytes / size:.2f}x the file")
            print(f"  to {args.nodes} nodes: {many:6.1f} s  ({many / one:.1f}x one node)  "
                  f"master egress {many_bytes / size:.2f}x the file  (star: the only way "
                  "built so far)")
            print("goal (pipelined distribution, not built yet): N nodes <= 1.3x one node, "
                  "master egress about 1x the file")
        finally:
            for client in clients:
                client.terminate()
            for client in clients:
                client.wait()
            api.shutdown()
            lab.down()


if __name__ == "__main__":
    main()
