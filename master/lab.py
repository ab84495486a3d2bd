"""``make lab``: several "machines" on one computer, for a class. Needs root.

A master in one network namespace and one client in each of N others, all joined by a
bridge: every host has its own network stack, its own address (10.77.0.0/24) and, for the
clients, its own host name (a UTS namespace), so what students see is what they would see
on real machines. ``--delay``/``--loss`` shape every client's link with ``tc netem``. The
console opens in the master's namespace; when it exits, everything is removed again.
``make lab-down`` (``--down``) removes whatever a lab left behind (a killed ``make lab``).

Everything it makes is named with one prefix, which is how ``--down`` finds it: namespaces
``corral-lab-master``, ``corral-lab-h1``...; links ``crl-lab-br`` (the bridge) and
``crl-lab-m``, ``crl-lab-h1``... (the bridge's end of each host's cable; inside each host
the other end is ``eth0``). Logs, the token and the clients' state are under logs/lab/.
``--name`` replaces ``lab`` in all of these, so two labs (a class's and a test's) coexist.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from client.spawn import SPAWNERS

SUBNET = "10.77.0"
MASTER_ADDRESS = f"{SUBNET}.1"
PORT = 7070
MAX_HOSTS = 99  # names stay within the kernel's 15 characters, addresses within .11-.109
LAB_NAME = re.compile(r"^[a-z][a-z0-9]{0,3}$")  # with the prefixes, link names fit 15 bytes
NETEM_VALUE = re.compile(r"^\d+(\.\d+)?(us|ms|s|%)?$")


class LabError(Exception):
    """A reason the lab cannot start, said in one line."""


@dataclasses.dataclass(frozen=True)
class Names:
    """What one lab calls the things it makes; ``--name`` keeps two labs apart."""

    lab: str = "lab"

    @property
    def namespace_prefix(self) -> str:
        return f"corral-{self.lab}-"

    @property
    def link_prefix(self) -> str:
        return f"crl-{self.lab}-"

    @property
    def bridge(self) -> str:
        return f"{self.link_prefix}br"

    def namespace(self, host: str) -> str:
        return f"{self.namespace_prefix}{host}"

    def link(self, host: str) -> str:
        return f"{self.link_prefix}{'m' if host == 'master' else host}"

    @property
    def folder(self) -> Path:
        return Path("logs") / self.lab


def run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        reason = (done.stderr or done.stdout).strip().splitlines()
        raise LabError(f"{shlex.join(argv)}: {reason[-1] if reason else 'failed'}")
    return done.stdout


def host_address(index: int) -> str:
    return f"{SUBNET}.{10 + index}"


def existing_namespaces(names: Names) -> list[str]:
    listing = run("ip", "netns", "list")
    found = [line.split()[0] for line in listing.splitlines() if line.strip()]
    return [name for name in found if name.startswith(names.namespace_prefix)]


def existing_links(names: Names) -> list[str]:
    listing = run("ip", "-o", "link", "show")
    found = [line.split(":")[1].strip().split("@")[0] for line in listing.splitlines()]
    return [name for name in found if name.startswith(names.link_prefix)]


def down(names: Names) -> list[str]:
    """Remove every namespace and link of a lab, ending the processes inside first."""
    removed = []
    for namespace in existing_namespaces(names):
        pids = run("ip", "netns", "pids", namespace).split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        run("ip", "netns", "del", namespace)
        ended = f" ({len(pids)} process{'' if len(pids) == 1 else 'es'} ended)"
        removed.append(f"namespace {namespace}{ended if pids else ''}")
    for link in existing_links(names):  # deleting one end of a veth deletes both
        with contextlib.suppress(LabError):
            run("ip", "link", "del", link)
            removed.append(f"link {link}")
    return removed


def plug(names: Names, namespace: str, link: str, address: str) -> None:
    """A namespace with a cable (veth pair) from the bridge: ``eth0`` inside, ``link``
    on the bridge."""
    run("ip", "netns", "add", namespace)
    run("ip", "link", "add", link, "type", "veth", "peer", "name", f"{link}p",
        "netns", namespace)
    run("ip", "-n", namespace, "link", "set", f"{link}p", "name", "eth0")
    run("ip", "-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
    run("ip", "-n", namespace, "link", "set", "eth0", "up")
    run("ip", "-n", namespace, "link", "set", "lo", "up")
    run("ip", "link", "set", link, "master", names.bridge, "up")


def shape(namespace: str, link: str, netem: list[str]) -> None:
    """Delay and loss in both directions of a host's cable: RTT grows by twice the delay."""
    try:
        run("tc", "qdisc", "add", "dev", link, "root", "netem", *netem)
        run("ip", "netns", "exec", namespace, "tc", "qdisc", "add", "dev", "eth0", "root",
            "netem", *netem)
    except LabError as exc:
        if "unknown" in str(exc).lower():
            raise LabError("this kernel has no tc netem (module sch_netem), so --delay and "
                           "--loss cannot be applied; start the lab without them") from None
        raise


def up(names: Names, hosts: list[str], netem: list[str]) -> None:
    run("ip", "link", "add", names.bridge, "type", "bridge")
    run("ip", "link", "set", names.bridge, "up")
    plug(names, names.namespace("master"), names.link("master"), MASTER_ADDRESS)
    for index, host in enumerate(hosts, 1):
        namespace, link = names.namespace(host), names.link(host)
        plug(names, namespace, link, host_address(index))
        if netem:
            shape(namespace, link, netem)


def in_namespace(namespace: str, hostname: str | None, argv: list[str]) -> list[str]:
    """``argv`` run in a network namespace, and with a host name of its own if given."""
    prefix = ["ip", "netns", "exec", namespace]
    if hostname is None:
        return [*prefix, *argv]
    return [*prefix, "unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', hostname,
            *argv]


def start_clients(names: Names, hosts: list[str], token_file: Path, spawn: str
                  ) -> list[subprocess.Popen[bytes]]:
    clients = []
    for host in hosts:
        node_dir = names.folder / host
        node_dir.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "client", "--master", f"{MASTER_ADDRESS}:{PORT}",
                "--token-file", str(token_file), "--state-dir", str(node_dir / "state"),
                "--workdir", str(node_dir / "work"), "--log-dir", str(node_dir / "logs"),
                "--spawn", spawn]
        with open(names.folder / f"{host}.log", "ab") as out:
            clients.append(subprocess.Popen(
                in_namespace(names.namespace(host), host, argv),
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
        (node_dir / "client.pid").write_text(f"{clients[-1].pid}\n")
    return clients


def netem_options(args: argparse.Namespace) -> list[str]:
    netem = []
    for name, value in (("delay", args.delay), ("loss", args.loss)):
        if value is None:
            continue
        if not NETEM_VALUE.match(value):
            raise LabError(f"--{name} {value!r}: expected a number with a unit, "
                           "such as 20ms or 1%")
        netem += [name, value]
    return netem


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="make lab ARGS=...", description="A master and N clients in network namespaces "
        "joined by a bridge, and the master's console. Needs root.")
    parser.add_argument("--hosts", type=int, default=3, help="clients h1..hN (default 3)")
    parser.add_argument("--delay", help="added to each direction of every client's link, "
                        "e.g. 20ms (tc netem)")
    parser.add_argument("--loss", help="packets lost in each direction, e.g. 1%% (tc netem)")
    parser.add_argument("--heartbeat", default="1", help="seconds between heartbeats")
    parser.add_argument("--spawn", choices=sorted(SPAWNERS), default="posix",
                        help="how the clients start processes (see corral-client --spawn)")
    parser.add_argument("--name", default="lab",
                        help="names this lab's namespaces (corral-NAME-h1) and links, so "
                        "two labs can coexist: 1 to 4 lower-case letters and digits")
    parser.add_argument("--down", action="store_true",
                        help="remove what a lab left behind, and start nothing")
    parser.add_argument("commands", nargs="*", help="console commands to run first "
                        "(end with quit to skip the prompt)")
    return parser


@contextlib.contextmanager
def lab_network(names: Names, hosts: list[str], netem: list[str]) -> Iterator[None]:
    leftovers = existing_namespaces(names) + existing_links(names)
    if leftovers:
        raise LabError(f"a lab is already up ({', '.join(leftovers[:3])}...): "
                       "make lab-down removes it")
    try:
        up(names, hosts, netem)
        yield
    finally:
        down(names)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if os.geteuid() != 0:
        print("corral-lab: network namespaces need root: sudo make lab", file=sys.stderr)
        return 2
    try:
        if not LAB_NAME.match(args.name):
            raise LabError(f"--name {args.name!r}: 1 to 4 lower-case letters and digits, "
                           "starting with a letter")
        names = Names(args.name)
        if args.down:
            removed = down(names)
            print("\n".join(removed) if removed else "no lab to remove")
            return 0
        if not 1 <= args.hosts <= MAX_HOSTS:
            raise LabError(f"--hosts {args.hosts}: between 1 and {MAX_HOSTS}")
        netem = netem_options(args)
        hosts = [f"h{index}" for index in range(1, args.hosts + 1)]
        with lab_network(names, hosts, netem):
            return run_lab(names, hosts, args)
    except LabError as exc:
        print(f"corral-lab: {exc}", file=sys.stderr)
        return 1


def run_lab(names: Names, hosts: list[str], args: argparse.Namespace) -> int:
    from master.api import load_master_token  # only once the network is there
    from master.demo import stop_clients

    names.folder.mkdir(parents=True, exist_ok=True)
    token_file = names.folder / "token"
    load_master_token(token_file)
    clients = start_clients(names, hosts, token_file, args.spawn)
    print(f"lab: master {MASTER_ADDRESS}:{PORT}; "
          + ", ".join(f"{host} {host_address(i)}" for i, host in enumerate(hosts, 1))
          + f" (logs: {names.folder}/)", flush=True)
    commands = args.commands or [f"list --wait {len(hosts)} --timeout 60"]
    master = in_namespace(names.namespace("master"), None, [
        sys.executable, "-m", "master", "--host", MASTER_ADDRESS, "--port", str(PORT),
        "--token-file", str(token_file), "--log-dir", str(names.folder),
        # The lab is a cluster of its own: its remembered nodes must not show up as GONE
        # in the operator's usual master (or the demo's).
        "--state-dir", str(names.folder / "master-state"),
        "--heartbeat", args.heartbeat, *commands])
    console = subprocess.Popen(master)
    try:
        while True:
            # Ctrl-C at the prompt reaches this process too; it is the console's (it
            # cancels a command there), so keep waiting.
            with contextlib.suppress(KeyboardInterrupt):
                return console.wait()
    finally:
        stop_clients(clients)


if __name__ == "__main__":
    raise SystemExit(main())
