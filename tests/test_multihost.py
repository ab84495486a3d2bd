"""Master and clients on separate hosts: network namespaces joined by veth pairs and a
bridge, made and removed by the test. Skipped where the machine cannot create them."""

from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.states import NodeState
from master.api import MasterAPI
from master.bridge import HubThread
from master.server import MasterConfig, MasterEngine
from tests.conftest import TOKEN
from tests.harness import ClientProcess, wait_until

HEARTBEAT = 0.2
CLONE_NEWNET = 0x40000000


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


class NetLab:
    """A bridge and one namespace per host, each with an address on 10.<k>.0.0/24."""

    def __init__(self, hosts: list[str]) -> None:
        self.tag = f"{os.getpid() % 100000}"
        self.subnet = f"10.{200 + os.getpid() % 50}.{os.getpid() % 250}"
        self.bridge = f"cbr{self.tag}"
        self.hosts = hosts
        self.namespaces: dict[str, str] = {}
        self.addresses: dict[str, str] = {}
        self.host_links: dict[str, str] = {}

    def up(self) -> None:
        ip("link", "add", self.bridge, "type", "bridge")
        ip("link", "set", self.bridge, "up")
        for index, host in enumerate(self.hosts, 1):
            ns = f"c{self.tag}{host}"
            outer, inner = f"v{self.tag}{index}", f"p{self.tag}{index}"
            ip("netns", "add", ns)
            ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            ip("link", "set", inner, "netns", ns)
            ip("link", "set", outer, "master", self.bridge, "up")
            address = f"{self.subnet}.{index}"
            ip("-n", ns, "addr", "add", f"{address}/24", "dev", inner)
            ip("-n", ns, "link", "set", inner, "up")
            ip("-n", ns, "link", "set", "lo", "up")
            self.namespaces[host] = ns
            self.addresses[host] = address
            self.host_links[host] = outer

    def down(self) -> None:
        for ns in self.namespaces.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        for link in self.host_links.values():
            subprocess.run(["ip", "link", "del", link], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)

    def set_link(self, host: str, state: str) -> None:
        ip("link", "set", self.host_links[host], state)


def enter_namespace(name: str) -> None:
    """Move the calling thread (only) into network namespace ``name``."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns failed")
    finally:
        os.close(fd)


@pytest.fixture
def lab() -> Iterator[NetLab]:
    lab = NetLab(["master", "h1", "h2", "h3"])
    try:
        lab.up()
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        lab.down()
        detail = getattr(exc, "stderr", b"") or b""
        pytest.skip(f"cannot create network namespaces here: {detail.decode().strip() or exc}")
    yield lab
    lab.down()


def start_master_inside(lab: NetLab, config: MasterConfig, token: bytes) -> MasterAPI:
    """The master engine with its hub thread inside the master's namespace."""
    engine = MasterEngine(config, token)
    hub = HubThread()

    def start_inside() -> None:
        enter_namespace(lab.namespaces["master"])
        engine.start()

    hub.start(start_inside)
    return MasterAPI(engine, hub)


@pytest.fixture
def lab_master(lab: NetLab, tmp_path: Path) -> Iterator[MasterAPI]:
    config = MasterConfig(host=lab.addresses["master"], port=0, heartbeat=HEARTBEAT,
                          log_dir=tmp_path)
    api = start_master_inside(lab, config, TOKEN.encode())
    yield api
    api.shutdown()


@pytest.fixture
def lab_clients(lab: NetLab, lab_master: MasterAPI, tmp_path: Path,
                token_file: Path) -> Iterator[list[ClientProcess]]:
    clients = []
    for host in ("h1", "h2", "h3"):
        client = ClientProcess(host, lab_master.address, token_file, tmp_path,
                               prefix=["ip", "netns", "exec", lab.namespaces[host]])
        clients.append(client.start())
    yield clients
    for client in clients:
        client.stop()


@pytest.mark.slow
def test_full_cycle_across_hosts(lab: NetLab, lab_master: MasterAPI, lab_clients,
                                 tmp_path: Path) -> None:
    assert lab_master.wait_ready(3, timeout=30).reached
    addresses = {n.name: n.address.split(":")[0] for n in lab_master.nodes()}
    assert addresses == {h: lab.addresses[h] for h in ("h1", "h2", "h3")}
    started = lab_master.exec(None, ["sh", "-c", "echo on $(hostname) in $PWD; exit 2"])
    refs = [f"{name}:{info.pid}" for name, infos in started.results.items() for info in infos]
    assert [r.info.describe() for r in lab_master.wait(refs, timeout=30)] == ["exited 2"] * 3
    table = lab_master.processes()
    assert sorted(table.results) == ["h1", "h2", "h3"]
    payload = tmp_path / "payload.bin"
    payload.write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    assert lab_master.copy(None, [str(payload)], "in/payload.bin").ok
    for client in lab_clients:
        copied = client.workdir / "in" / "payload.bin"
        assert hashlib.sha256(copied.read_bytes()).digest() == hashlib.sha256(
            payload.read_bytes()).digest()
    pulled = lab_master.pull(None, ["in"], str(tmp_path / "back"))
    assert pulled.ok and all(r.files == 1 for r in pulled.results.values())
    usage = lab_master.rusage()
    assert usage.ok and all(r.children["ru_utime"] >= 0 for r in usage.results.values())


@pytest.mark.slow
def test_link_down_then_up(lab: NetLab, lab_master: MasterAPI, lab_clients) -> None:
    assert lab_master.wait_ready(3, timeout=30).reached
    (sleeper,) = lab_master.exec("h2", ["sleep", "120"]).results["h2"]

    def state() -> NodeState:
        return {n.name: n.state for n in lab_master.nodes()}["h2"]

    lab.set_link("h2", "down")
    wait_until(lambda: state() is NodeState.MISSING, what="h2 MISSING")
    wait_until(lambda: state() is NodeState.GONE, what="h2 GONE")
    lab.set_link("h2", "up")
    wait_until(lambda: state() is NodeState.READY, what="h2 READY again")
    procs = lab_master.processes("h2").results["h2"]
    assert [(p.pid, p.describe()) for p in procs] == [(sleeper.pid, "running")]
    assert lab_master.signal([f"h2:{sleeper.pid}"], 9)[0].ok


@pytest.mark.slow
def test_a_client_notices_its_link_went_down_and_comes_back_by_itself(
        lab: NetLab, lab_master: MasterAPI, lab_clients) -> None:
    assert lab_master.wait_ready(3, timeout=30).reached
    h1 = lab_clients[0]
    lab.set_link("h1", "down")  # no FIN, no RST: only silence tells the client
    wait_until(lambda: "was acknowledged for" in h1.log_text()
               and "the link or the master's host is down; reconnecting" in h1.log_text(),
               what="h1 noticed the silence")
    lab.set_link("h1", "up")
    wait_until(lambda: h1.log_text().count("registered with master") >= 2,
               what="h1 registered again")
    assert lab_master.wait_ready(3, timeout=30).reached
