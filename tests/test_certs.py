"""``corral-master certs``: certificates made by corral itself serve a TLS cluster, and a
client's certificate is bound to its node name."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import PATIENCE, ROOT, python_env, wait_until


def certs(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "master", "certs", *args], cwd=cwd,
                          capture_output=True, text=True, env=python_env(), timeout=PATIENCE)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("made") / "pki"
    made = certs("init", "--dir", str(folder), "--ip", "127.0.0.1", "--host", "localhost")
    assert made.returncode == 0, made.stderr
    (folder / "init.out").write_text(made.stdout)
    for node in ("n1", "ch1"):
        issued = certs("issue", node, "--dir", str(folder))
        assert issued.returncode == 0, issued.stderr
    return folder


def master_args(pki: Path) -> list[str]:
    return ["--tls-cert", str(pki / "master.crt"), "--tls-key", str(pki / "master.key"),
            "--tls-ca", str(pki / "ca.crt")]


def client_args(pki: Path, node: str) -> list[str]:
    return ["--tls-cert", str(pki / f"{node}.crt"), "--tls-key", str(pki / f"{node}.key"),
            "--tls-ca", str(pki / "ca.crt")]


@pytest.mark.slow
def test_made_certificates_serve_a_tls_cluster(pki: Path, spawn_master, spawn_client) -> None:
    fingerprint = re.search(r"master certificate SHA-256 ([0-9A-F:]{95})",
                            (pki / "init.out").read_text())
    master = spawn_master(["list --wait 1 --timeout 30", "run -w n1 -- echo over tls", "quit"],
                          extra=master_args(pki))
    assert "TLS on, master certificate SHA-256 " in master.banner
    assert fingerprint is not None and fingerprint.group(1) in master.banner
    client = spawn_client("n1", master.address, extra=client_args(pki, "n1"))
    out, err = master.proc.communicate(timeout=PATIENCE * 2)
    assert master.proc.returncode == 0, err
    assert "over tls" in out
    assert f"TLS, master certificate SHA-256 {fingerprint.group(1)}" in client.log_text()
    assert (pki / "ca.key").stat().st_mode & 0o777 == 0o600
    assert (pki / "n1.key").stat().st_mode & 0o777 == 0o600


def test_a_plain_master_says_tls_is_off(spawn_master) -> None:
    assert "TLS off" in spawn_master().banner


@pytest.mark.slow
def test_a_certificate_bound_to_another_name_is_refused(pki: Path, spawn_master,
                                                        spawn_client) -> None:
    master = spawn_master(extra=master_args(pki))
    impostor = spawn_client("impostor", master.address, extra=client_args(pki, "ch1"))
    refusal = "certificate for 'ch1' presented by a node registering as 'impostor'"
    wait_until(lambda: refusal in master.log_text(), what="master's log")
    wait_until(lambda: refusal in impostor.log_text(), what="client's log")
    honest = spawn_client("ch1", master.address, extra=client_args(pki, "ch1"))
    wait_until(lambda: "registered with master" in honest.log_text(), what="ch1 admitted")
    assert "registered with master" not in impostor.log_text()


@pytest.mark.slow
def test_certs_refuses_to_replace_a_ca_and_needs_one_to_issue(tmp_path: Path) -> None:
    assert certs("init", "--dir", str(tmp_path / "pki")).returncode == 0
    again = certs("init", "--dir", str(tmp_path / "pki"))
    assert again.returncode == 2 and "exists already" in again.stderr
    orphan = certs("issue", "n1", "--dir", str(tmp_path / "none"))
    assert orphan.returncode == 2
    assert f"cannot read the CA in {tmp_path / 'none'}" in orphan.stderr
    bad = certs("issue", "a b", "--dir", str(tmp_path / "pki"))
    assert bad.returncode == 2 and "node name 'a b'" in bad.stderr
