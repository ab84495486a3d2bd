"""Chained copies between real clients: each node forwards to the next over a data link
that only a one-time ticket from the master opens; a node that dies is cut out."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from common import tickets
from common.framing import FrameChannel
from common.messages import ErrorFrame, LinkTicket, decode
from common.tls import TlsFiles
from master.api import MasterAPI
from master.front.results import Progress
from master.server import MasterConfig
from tests.conftest import FAST_HEARTBEAT, TOKEN
from tests.harness import PATIENCE, ROOT, ClientProcess, MasterProcess, python_env, wait_until
from tests.test_certs import certs, client_args
from tests.test_files import partials, random_file, sha


def data_port(client: ClientProcess) -> int:
    found = wait_until(lambda: re.search(r"data port (\d+)", client.log_text()),
                       what=f"{client.name}'s data port")
    return int(found.group(1))


def links_in(client: ClientProcess) -> list[str]:
    """The nodes this client took a data link from, by its log."""
    return re.findall(r"data link from (\S+) \(", client.log_text())


@pytest.fixture
def recorded_tickets(monkeypatch: pytest.MonkeyPatch) -> list[tickets.Ticket]:
    """Every ticket the (in-process) master issues."""
    issued: list[tickets.Ticket] = []
    real_issue = tickets.issue

    def issue(*args: object, **kwargs: object) -> tickets.Ticket:
        ticket = real_issue(*args, **kwargs)  # type: ignore[arg-type]
        issued.append(ticket)
        return ticket

    monkeypatch.setattr(tickets, "issue", issue)
    return issued


def corral(control: Path, *words: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "master.front.cli", "--control",
                           str(control), *words], capture_output=True, text=True,
                          env=python_env(), cwd=ROOT, timeout=PATIENCE * 2)


def start_nodes(master: MasterAPI, spawn_client, count: int) -> list[ClientProcess]:  # type: ignore[no-untyped-def]
    clients = [spawn_client(f"n{i}", master.address) for i in range(1, count + 1)]
    assert master.wait_ready(count, timeout=30).reached
    return clients


def test_two_nodes_get_the_copy_through_a_chain(master: MasterAPI, spawn_client,
                                                tmp_path: Path) -> None:
    n1, n2 = start_nodes(master, spawn_client, 2)
    source = random_file(tmp_path / "payload.bin", 3 * 1024 * 1024 + 17)
    seen: list[Progress] = []
    group = master.copy("n[1-2]", [str(source)], "data/payload.bin", progress=seen.append)
    assert group.ok, group.errors
    for client in (n1, n2):
        assert sha(client.workdir / "data/payload.bin") == sha(source)
        assert partials(client.workdir) == []
    assert links_in(n2) == ["n1"] and links_in(n1) == []  # n1 forwarded, the master did not
    assert all(p.total == source.stat().st_size and p.slowest for p in seen)


def test_star_sends_from_the_master_to_each(master: MasterAPI, spawn_client,
                                            tmp_path: Path) -> None:
    clients = start_nodes(master, spawn_client, 3)
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    random_file(tree / "sub" / "a.bin", 200_000)
    (tree / "b.txt").write_text("b\n")
    group = master.copy("n[1-3]", [str(tree)], "copied", recursive=True, star=True)
    assert group.ok, group.errors
    for client in clients:
        assert sha(client.workdir / "copied/sub/a.bin") == sha(tree / "sub" / "a.bin")
        assert (client.workdir / "copied/b.txt").read_text() == "b\n"
        assert links_in(client) == []


def test_a_folder_goes_down_the_chain_by_cp_rules(master: MasterAPI, spawn_client,
                                                  tmp_path: Path) -> None:
    clients = start_nodes(master, spawn_client, 3)
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    random_file(tree / "sub" / "a.bin", 1_500_000)
    (tree / "empty").mkdir()
    (tree / "link").symlink_to("sub/a.bin")
    group = master.copy("n[1-3]", [str(tree)], "copied", recursive=True)
    assert group.ok, group.errors
    for client in clients:
        assert sha(client.workdir / "copied/sub/a.bin") == sha(tree / "sub" / "a.bin")
        assert (client.workdir / "copied/empty").is_dir()
        assert (client.workdir / "copied/link").readlink() == Path("sub/a.bin")
    assert links_in(clients[2]) == ["n2"]


def test_a_node_that_refuses_dest_still_forwards(master: MasterAPI, spawn_client,
                                                 tmp_path: Path) -> None:
    clients = start_nodes(master, spawn_client, 3)
    (clients[1].workdir / "blocked").write_text("a file where a folder must be\n")
    source = random_file(tmp_path / "p.bin", 2_000_000)
    group = master.copy("n[1-3]", [str(source)], "blocked/p.bin")
    assert group.failed == ["n2"] and "not a directory" in group.errors["n2"].message
    assert group.succeeded == ["n1", "n3"]
    assert sha(clients[2].workdir / "blocked/p.bin") == sha(source)


@pytest.mark.slow
@pytest.mark.parametrize("position", [2, 0])
def test_a_node_killed_mid_chain_is_cut_out(master: MasterAPI, spawn_client,
                                            tmp_path: Path, position: int) -> None:
    clients = start_nodes(master, spawn_client, 5)
    victim = clients[position]
    source = random_file(tmp_path / "big.bin", 64 * 1024 * 1024)

    def kill_part_way(progress: Progress) -> None:
        if victim.proc is not None and victim.proc.poll() is None:
            victim.signal(signal.SIGKILL)

    group = master.copy("n[1-5]", [str(source)], "big.bin", progress=kill_part_way)
    assert group.failed == [victim.name], group.errors
    assert group.succeeded == [c.name for c in clients if c is not victim]
    for client in clients:
        if client is not victim:
            assert sha(client.workdir / "big.bin") == sha(source)
            assert partials(client.workdir) == []
    assert victim.proc is not None
    victim.proc.wait()
    victim.start()  # its ledger removes what the kill left behind
    assert master.wait_ready(5, timeout=30).reached
    assert not (victim.workdir / "big.bin").exists()
    assert partials(victim.workdir) == []


def _present(port: int, ticket: LinkTicket) -> str:
    """Offer ``ticket`` on a data port as a node would; the refusal it gets."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        channel = FrameChannel(sock)
        channel.send(ticket.to_wire())
        answer = decode(channel.read())
    assert isinstance(answer, ErrorFrame)
    return answer.message


def _wire(ticket: tickets.Ticket, **change: object) -> LinkTicket:
    fields = dict(transfer=ticket.transfer, sender=ticket.sender, receiver=ticket.receiver,
                  expires=ticket.expires, nonce=ticket.nonce, mac=ticket.mac)
    fields.update(change)
    return LinkTicket(**fields)  # type: ignore[arg-type]


def test_forged_replayed_or_misdirected_tickets_are_refused(
        master: MasterAPI, spawn_client, tmp_path: Path,
        recorded_tickets: list[tickets.Ticket]) -> None:
    clients = start_nodes(master, spawn_client, 3)
    source = random_file(tmp_path / "p.bin", 100_000)
    assert master.copy("n[1-3]", [str(source)], "p.bin").ok
    to_n2 = next(t for t in recorded_tickets if t.receiver == "n2")
    n2_port, n3_port = data_port(clients[1]), data_port(clients[2])
    assert "used already (a replay)" in _present(n2_port, _wire(to_n2))
    assert "forged or altered" in _present(n2_port, _wire(to_n2, mac=b"\0" * 32))
    assert "forged or altered" in _present(n2_port, _wire(to_n2, sender="n3"))
    assert "the ticket is for 'n2'" in _present(n3_port, _wire(to_n2))
    # Nothing the refusals did disturbs the next copy.
    assert master.copy("n[1-3]", [str(source)], "again.bin").ok
    assert sha(clients[2].workdir / "again.bin") == sha(source)


@pytest.fixture
def tls_cluster(tmp_path: Path, master_log: Path, spawn_client
                ) -> Iterator[tuple[MasterAPI, list[ClientProcess], Path]]:
    """A master and three nodes with certificates made by ``corral-master certs``."""
    pki = tmp_path / "pki"
    made = certs("init", "--dir", str(pki), "--ip", "127.0.0.1", "--host", "localhost")
    assert made.returncode == 0, made.stderr
    for node in ("n1", "n2", "n3"):
        assert certs("issue", node, "--dir", str(pki)).returncode == 0
    api = MasterAPI.start(
        MasterConfig(port=0, heartbeat=FAST_HEARTBEAT, log_dir=tmp_path, handshake_timeout=5,
                     tls=TlsFiles(pki / "master.crt", pki / "master.key", pki / "ca.crt")),
        TOKEN.encode())
    try:
        clients = [spawn_client(node, api.address, extra=client_args(pki, node))
                   for node in ("n1", "n2", "n3")]
        assert api.wait_ready(3, timeout=30).reached
        yield api, clients, pki
    finally:
        api.shutdown()


@pytest.mark.slow
def test_a_chain_across_tls(tls_cluster: tuple[MasterAPI, list[ClientProcess], Path],
                            tmp_path: Path) -> None:
    master, clients, _pki = tls_cluster
    source = random_file(tmp_path / "p.bin", 5 * 1024 * 1024)
    group = master.copy("n[1-3]", [str(source)], "p.bin")
    assert group.ok, group.errors
    for client in clients:
        assert sha(client.workdir / "p.bin") == sha(source)
    assert links_in(clients[1]) == ["n1"] and links_in(clients[2]) == ["n2"]
    # A data port of a TLS cluster speaks nothing but TLS.
    with socket.create_connection(("127.0.0.1", data_port(clients[1])), timeout=30) as sock:
        FrameChannel(sock).send(LinkTicket(transfer="t", sender="n1", receiver="n2",
                                           expires=0.0, nonce="00", mac=b"").to_wire())
        try:
            answer = sock.recv(100)
        except ConnectionResetError:
            answer = b""
        assert answer == b""  # closed, and no word in clear
    assert wait_until(lambda: "does not speak TLS" in clients[1].log_text())


@pytest.fixture
def patient_master(tmp_path: Path) -> Iterator[MasterAPI]:
    """Heartbeats slow enough that a stopped node is still READY when the chain, with a
    short stall time, gives up on it."""
    api = MasterAPI.start(MasterConfig(port=0, heartbeat=1.0, log_dir=tmp_path,
                                       stall_timeout=2.0), TOKEN.encode())
    try:
        yield api
    finally:
        api.shutdown()


@pytest.mark.slow
@pytest.mark.parametrize("position", [0, 1])
def test_a_stalled_node_is_cut_out_and_leaves_nothing(patient_master: MasterAPI, spawn_client,
                                                      tmp_path: Path, position: int) -> None:
    master = patient_master
    clients = start_nodes(master, spawn_client, 4)
    victim = clients[position]
    others = [client for client in clients if client is not victim]
    source = random_file(tmp_path / "big.bin", 48 * 1024 * 1024)
    stopped: list[bool] = []

    def stop_part_way(progress: Progress) -> None:
        if not stopped:
            stopped.append(True)
            victim.signal(signal.SIGSTOP)

    try:
        group = master.copy("n[1-4]", [str(source)], "big.bin", progress=stop_part_way)
    finally:
        victim.signal(signal.SIGCONT)
    assert group.failed == [victim.name], group.errors
    assert "accepted nothing for" in group.errors[victim.name].message
    for client in others:
        assert sha(client.workdir / "big.bin") == sha(source)
    wait_until(lambda: partials(victim.workdir) == [], what="no partial file on the victim")
    assert not (victim.workdir / "big.bin").exists()


@pytest.mark.slow
def test_the_stall_timeout_is_an_option_of_corral_master(spawn_master, spawn_client,  # type: ignore[no-untyped-def]
                                                         tmp_path: Path) -> None:
    master = spawn_master(extra=["--no-console", "--stall-timeout", "2"])
    control = master.base / "master-state" / "control.sock"
    clients = [spawn_client(f"n{i}", master.address) for i in (1, 2, 3)]
    ready = corral(control, "list", "--wait", "3", "--timeout", "30")
    assert ready.returncode == 0, ready.stderr
    victim = clients[2]  # the last node: the node before it waits exactly the stall timeout
    source = random_file(tmp_path / "big.bin", 128 * 1024 * 1024)
    copying = subprocess.Popen(
        [sys.executable, "-m", "master.front.cli", "--control", str(control), "copy", "-w",
         "n[1-3]", str(source), "big.bin"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, env=python_env(), cwd=ROOT)
    try:
        wait_until(lambda: partials(victim.workdir), what="the copy reaching n3")
        victim.signal(signal.SIGSTOP)
        output, _ = copying.communicate(timeout=PATIENCE * 2)
    finally:
        victim.signal(signal.SIGCONT)
        copying.kill()
        copying.wait()
    assert copying.returncode != 0, output
    assert "n3" in output and "accepted nothing for 2 s" in output, output
    for client in clients[:2]:
        assert sha(client.workdir / "big.bin") == sha(source)
    wait_until(lambda: partials(victim.workdir) == [], what="no partial file on n3")


@pytest.mark.slow  # a master process per value: seconds each
@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "soon"])
def test_a_stall_timeout_that_is_not_a_positive_time_is_refused(tmp_path: Path,
                                                                token_file: Path,
                                                                value: str) -> None:
    argv = MasterProcess(tmp_path, token_file, 0, ["--stall-timeout", value]).argv(["quit"])
    result = subprocess.run(argv, capture_output=True, text=True, env=python_env(), cwd=ROOT,
                            stdin=subprocess.DEVNULL, timeout=PATIENCE)
    assert result.returncode == 2
    assert "argument --stall-timeout: " in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    config = tmp_path / "corral.toml"
    config.write_text(f'[master]\nstall-timeout = "{value}"\n')
    argv = MasterProcess(tmp_path, token_file, 0, ["--config", str(config)]).argv(["quit"])
    result = subprocess.run(argv, capture_output=True, text=True, env=python_env(), cwd=ROOT,
                            stdin=subprocess.DEVNULL, timeout=PATIENCE)
    assert result.returncode == 2
    assert f"{config}: [master] stall-timeout: " in result.stderr, result.stderr
