"""TLS under the token handshake, with a CA and certificates made here by openssl."""

from __future__ import annotations

import http.client
import json
import logging
import re
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.tls import TlsFiles
from master.api import MasterAPI
from master.server import MasterConfig
from tests.conftest import FAST_HEARTBEAT, TOKEN
from tests.harness import PATIENCE, wait_until

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(folder: Path, name: str) -> tuple[Path, Path]:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-keyout", f"{name}.key", "-out", f"{name}.pem", "-subj", f"/CN={name}",
             cwd=folder)
    return folder / f"{name}.pem", folder / f"{name}.key"


def make_cert(folder: Path, name: str, ca: tuple[Path, Path], san: str) -> tuple[Path, Path]:
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
             "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=folder)
    (folder / f"{name}.ext").write_text(f"subjectAltName={san}\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", str(ca[0]), "-CAkey", str(ca[1]),
             "-CAcreateserial", "-days", "2", "-out", f"{name}.pem",
             "-extfile", f"{name}.ext", cwd=folder)
    return folder / f"{name}.pem", folder / f"{name}.key"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pki")
    ca = make_ca(folder, "ca")
    rogue_ca = make_ca(folder, "rogue-ca")
    master = make_cert(folder, "master", ca, "IP:127.0.0.1,DNS:localhost")
    named = make_cert(folder, "named", ca, "DNS:localhost")
    client = make_cert(folder, "client", ca, "DNS:n1")
    rogue = make_cert(folder, "rogue", rogue_ca, "DNS:n9")
    return {"ca": ca[0], "master.pem": master[0], "master.key": master[1],
            "client.pem": client[0], "client.key": client[1],
            "named.pem": named[0], "named.key": named[1],
            "rogue.pem": rogue[0], "rogue.key": rogue[1], "rogue-ca": rogue_ca[0]}


@pytest.fixture
def tls_master(tmp_path: Path, pki: dict[str, Path], master_log: Path) -> Iterator[MasterAPI]:
    handler = logging.FileHandler(master_log)
    logging.getLogger("corral").addHandler(handler)
    logging.getLogger("corral").setLevel(logging.INFO)
    api = MasterAPI.start(
        MasterConfig(port=0, heartbeat=FAST_HEARTBEAT, log_dir=tmp_path, handshake_timeout=2,
                     tls=TlsFiles(pki["master.pem"], pki["master.key"], pki["ca"])),
        TOKEN.encode())
    yield api
    api.shutdown()
    logging.getLogger("corral").removeHandler(handler)


def tls_args(pki: dict[str, Path], who: str = "client", ca: str = "ca") -> list[str]:
    return ["--tls-cert", str(pki[f"{who}.pem"]), "--tls-key", str(pki[f"{who}.key"]),
            "--tls-ca", str(pki[ca])]


@pytest.mark.slow
def test_tls_client_works(tls_master: MasterAPI, spawn_client, pki) -> None:
    spawn_client("n1", tls_master.address, extra=tls_args(pki))
    assert tls_master.wait_ready(1, timeout=30).reached
    assert tls_master.run("n1", "echo over tls").results["n1"].stdout == b"over tls\n"


@pytest.mark.slow
def test_client_without_tls_is_refused(tls_master: MasterAPI, spawn_client,
                                       master_log: Path) -> None:
    plain = spawn_client("plain", tls_master.address)
    wait_until(lambda: "TLS handshake failed" in master_log.read_text(), what="master's log")
    wait_until(lambda: "master refused: TLS handshake failed: this master requires TLS and "
               "the client started none" in plain.log_text(), what="client's log")
    assert tls_master.nodes() == []
    assert plain.proc.poll() is None


def test_client_certificate_from_another_ca_is_refused(tls_master: MasterAPI, spawn_client,
                                                       pki, master_log: Path) -> None:
    rogue = spawn_client("rogue", tls_master.address, extra=tls_args(pki, "rogue"))
    wait_until(lambda: "TLS handshake failed" in master_log.read_text(), what="master's log")
    wait_until(lambda: "failed: the master refused this client's certificate (tlsv1 alert "
               "unknown ca" in rogue.log_text(), what="client's log")
    wait_until(lambda: "the client's certificate is not accepted by this master: unable to "
               "get local issuer certificate" in master_log.read_text(), what="master's log")
    assert tls_master.nodes() == []


def test_client_refuses_a_master_it_cannot_verify(tls_master: MasterAPI, spawn_client,
                                                  pki) -> None:
    wary = spawn_client("n1", tls_master.address, extra=tls_args(pki, "client", "rogue-ca"))
    wait_until(lambda: "the master's certificate is not accepted by this client: self-signed "
               "certificate in certificate chain" in wary.log_text(), what="client's log")
    assert tls_master.nodes() == []


# --- TLS on one side only, through real master processes -----------------------------------

def master_tls_args(pki: dict[str, Path]) -> list[str]:
    return ["--tls-cert", str(pki["master.pem"]), "--tls-key", str(pki["master.key"]),
            "--tls-ca", str(pki["ca"])]


@pytest.mark.slow
def test_tls_client_against_a_plain_master(spawn_master, spawn_client, pki) -> None:
    master = spawn_master()
    client = spawn_client("n1", master.address, extra=tls_args(pki))
    wait_until(lambda: "the client speaks TLS but this master does not (start the master "
               "with --tls-cert, --tls-key and --tls-ca" in master.log_text(),
               what="master's log")
    wait_until(lambda: "failed: the master does not speak TLS but this client does"
               in client.log_text(), what="client's log")
    assert "exceeds" not in master.log_text()  # no 369,295,618-byte "frame"
    assert "wrong version number" not in client.log_text()
    assert client.proc.poll() is None  # it keeps trying, in case the master is restarted


@pytest.mark.slow
def test_plain_client_against_a_tls_master(spawn_master, spawn_client, pki) -> None:
    master = spawn_master(extra=[*master_tls_args(pki), "--handshake-timeout", "1"])
    client = spawn_client("n1", master.address)
    wanted = ("TLS handshake failed: this master requires TLS and the client started none "
              "within 1 s (start the client with --tls-cert, --tls-key and --tls-ca)")
    wait_until(lambda: wanted in master.log_text(), what="master's log")
    wait_until(lambda: f"master refused: {wanted}" in client.log_text(), what="client's log")
    assert client.proc.poll() is None


def test_a_certificate_for_another_address_is_blamed_on_its_owner_on_both_sides(
        spawn_master, spawn_client, pki) -> None:
    master = spawn_master(extra=["--tls-cert", str(pki["named.pem"]), "--tls-key",
                                 str(pki["named.key"]), "--tls-ca", str(pki["ca"])])
    client = spawn_client("n1", master.address, extra=tls_args(pki))
    wait_until(lambda: "the master's certificate is not accepted by this client: IP address "
               "mismatch, certificate is not valid for '127.0.0.1'" in client.log_text(),
               what="client's log")
    wait_until(lambda: "the client refused this master's certificate" in master.log_text(),
               what="master's log")


def test_the_dashboard_is_served_over_https_with_the_masters_certificate(
        tmp_path: Path, pki: dict[str, Path]) -> None:
    api = MasterAPI.start(
        MasterConfig(port=0, heartbeat=FAST_HEARTBEAT, log_dir=tmp_path,
                     tls=TlsFiles(pki["master.pem"], pki["master.key"], pki["ca"]),
                     http=("127.0.0.1", 0)), TOKEN.encode())
    try:
        assert api.web_url is not None and api.web_url.startswith("https://127.0.0.1:")
        port = int(api.web_url.rstrip("/").rsplit(":", 1)[1])
        trusted = ssl.create_default_context(cafile=str(pki["ca"]))

        def ask(method: str, path: str, body: bytes | None = None
                ) -> http.client.HTTPResponse:
            connection = http.client.HTTPSConnection("127.0.0.1", port, context=trusted,
                                                     timeout=PATIENCE)
            connection.request(method, path, body=body,
                               headers={"Content-Type": "application/json"})
            return connection.getresponse()

        assert ask("GET", "/healthz").read() == b"ok\n"
        login = ask("POST", "/login", json.dumps({"token": TOKEN}).encode())
        assert login.status == 200
        cookie = login.getheader("Set-Cookie", "")
        assert "; Secure" in cookie  # never sent in clear
        assert cookie.startswith("__Host-corral_session=")  # no sibling host may set it
        plain = http.client.HTTPConnection("127.0.0.1", port, timeout=PATIENCE)
        with pytest.raises((ConnectionError, http.client.HTTPException)):
            plain.request("GET", "/healthz")
            plain.getresponse()  # a TLS port answers no plain HTTP
    finally:
        api.shutdown()


@pytest.fixture
def https_dashboard(tmp_path: Path, pki: dict[str, Path], master_log: Path
                    ) -> Iterator[tuple[MasterAPI, int]]:
    handler = logging.FileHandler(master_log)
    logging.getLogger("corral").addHandler(handler)
    logging.getLogger("corral").setLevel(logging.INFO)
    api = MasterAPI.start(
        MasterConfig(port=0, heartbeat=FAST_HEARTBEAT, log_dir=tmp_path,
                     tls=TlsFiles(pki["master.pem"], pki["master.key"], pki["ca"]),
                     http=("127.0.0.1", 0)), TOKEN.encode())
    try:
        assert api.web_url is not None
        yield api, int(api.web_url.rstrip("/").rsplit(":", 1)[1])
    finally:
        api.shutdown()
        logging.getLogger("corral").removeHandler(handler)
        handler.close()


def closed_by_peer(connection: socket.socket) -> bool:
    try:
        return connection.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionError:
        return True


def test_a_connection_that_never_starts_tls_is_let_go(
        https_dashboard: tuple[MasterAPI, int], monkeypatch: pytest.MonkeyPatch) -> None:
    """An idle TCP connection on the HTTPS dashboard holds its place in the pool only as
    long as one that sends no request: 256 of them would otherwise lock everyone out."""
    monkeypatch.setattr("master.web.server.SOCKET_TIMEOUT", 0.5)
    _api, port = https_dashboard
    with socket.create_connection(("127.0.0.1", port), timeout=0.2) as idle:
        wait_until(lambda: closed_by_peer(idle), what="the idle connection closed")


def test_plain_http_on_the_https_dashboard_is_one_log_line(spawn_master,
                                                           pki: dict[str, Path]) -> None:
    """A browser that typed http:// (or a scanner) gets nothing, and the master's terminal
    no traceback: one line in the log says who failed the handshake."""
    master = spawn_master(extra=[
        "--no-console", "--http", "0", "--tls-cert", str(pki["master.pem"]),
        "--tls-key", str(pki["master.key"]), "--tls-ca", str(pki["ca"])])
    port = int(re.search(r"dashboard on https://[\d.]+:(\d+)/", master.banner).group(1))
    plain = http.client.HTTPConnection("127.0.0.1", port, timeout=PATIENCE)
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        plain.request("GET", "/healthz")
        plain.getresponse()
    wait_until(lambda: "web: no TLS handshake from 127.0.0.1: " in master.log_text(),
               what="the failed handshake logged")
    trusted = ssl.create_default_context(cafile=str(pki["ca"]))
    secure = http.client.HTTPSConnection("127.0.0.1", port, context=trusted, timeout=PATIENCE)
    secure.request("GET", "/healthz")
    assert secure.getresponse().read() == b"ok\n"
    master.stop()
    assert "Traceback" not in master.proc.stderr.read()
