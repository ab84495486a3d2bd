"""``corral-master certs``: a small certificate authority for one corral cluster, so TLS
needs no openssl course.

``certs init`` makes the CA and the master's certificate, whose subject alternative names
are the host names and addresses the clients dial; ``certs issue NODE`` makes a client's
certificate, bound to its node name (the master admits it only for a client registering
under that name). Keys are ECDSA P-256 and written with mode 0600. Made with the
``cryptography`` package.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.names import NAME_RULE, name_problem
from common.tls import fingerprint

CA_DAYS = 3650
LEAF_DAYS = 825


class CertsError(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="corral-master certs",
        description="Make the certificates a TLS cluster needs: a CA, the master's "
                    "certificate, and one certificate per client node.")
    commands = parser.add_subparsers(dest="action", required=True)
    init = commands.add_parser("init", help="make the CA and the master's certificate")
    init.add_argument("--dir", type=Path, default=Path("pki"),
                      help="where the files go (default: ./pki)")
    init.add_argument("--host", action="append", default=[], metavar="NAME",
                      help="a host name clients dial the master by (repeatable)")
    init.add_argument("--ip", action="append", default=[], metavar="ADDRESS",
                      type=ipaddress.ip_address,
                      help="an IP address clients dial the master at (repeatable)")
    init.add_argument("--days", type=int, default=LEAF_DAYS,
                      help=f"validity of the master's certificate (default {LEAF_DAYS})")
    init.add_argument("--force", action="store_true", help="replace an existing CA")
    issue = commands.add_parser("issue", help="make a client node's certificate")
    issue.add_argument("node", help="the node's name, as the client registers (--name). "
                       + NAME_RULE)
    issue.add_argument("--dir", type=Path, default=Path("pki"),
                       help="where the CA is and the files go (default: ./pki)")
    issue.add_argument("--days", type=int, default=LEAF_DAYS,
                       help=f"validity (default {LEAF_DAYS})")
    issue.add_argument("--force", action="store_true", help="replace an existing one")
    return parser


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.days < 1:
            raise CertsError("--days must be at least 1")
        if args.action == "init":
            init(args.dir, args.host, args.ip, args.days, args.force)
        else:
            issue(args.dir, args.node, args.days, args.force)
    except CertsError as exc:
        print(f"corral-master certs: {exc}", file=sys.stderr)
        return 2
    return 0


def init(folder: Path, hosts: list[str], ips: list[ipaddress.IPv4Address | ipaddress.IPv6Address],
         days: int, force: bool) -> None:
    ca_cert, ca_key = folder / "ca.crt", folder / "ca.key"
    if ca_key.exists() and not force:
        raise CertsError(f"{ca_key} exists already (a new CA invalidates every certificate "
                         "it signed; add --force to replace it)")
    if not hosts and not ips:
        hosts = [socket.gethostname(), "localhost"]
        ips = [ipaddress.ip_address("127.0.0.1")]
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "corral CA")])
    now = datetime.datetime.now(datetime.UTC)
    ca = (_builder(name, name, key.public_key(), now, CA_DAYS)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, key_cert_sign=True, crl_sign=True,
                                       encipher_only=False, decipher_only=False),
                         critical=True)
          .sign(key, hashes.SHA256()))
    _write_key(ca_key, key)
    _write(ca_cert, ca.public_bytes(serialization.Encoding.PEM))
    sans: list[x509.GeneralName] = [x509.DNSName(h) for h in hosts]
    sans += [x509.IPAddress(ip) for ip in ips]
    common_name = hosts[0] if hosts else str(ips[0])
    master_cert = _leaf(folder, "master", common_name, sans, [ExtendedKeyUsageOID.SERVER_AUTH],
                        (ca, key), days)
    names = ", ".join([f"DNS:{h}" for h in hosts] + [f"IP:{ip}" for ip in ips])
    print(f"made {ca_cert} (the CA; keep {ca_key} safe) and {master_cert} for {names}\n"
          f"master certificate SHA-256 {fingerprint(master_cert)}\n"
          f"start the master with --tls-cert {master_cert} --tls-key "
          f"{master_cert.with_suffix('.key')} --tls-ca {ca_cert}\n"
          f"then make each client's certificate with: corral-master certs issue NODE")


def issue(folder: Path, node: str, days: int, force: bool) -> None:
    if (problem := name_problem(node)) is not None:
        raise CertsError(f"node name {node!r}: {problem}")
    if node in ("ca", "master"):
        raise CertsError(f"{node!r} names the CA's or the master's files; pick another name")
    target = folder / f"{node}.crt"
    if target.exists() and not force:
        raise CertsError(f"{target} exists already (add --force to replace it)")
    ca = _load_ca(folder)
    # The name goes in the subject and, for verifiers that read only those, as a DNS name.
    # A client to the master, and a server to the nodes that send it chained copies.
    made = _leaf(folder, node, node, [x509.DNSName(node)],
                 [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH], ca, days)
    print(f"made {made} for node {node}\n"
          f"copy {made}, {made.with_suffix('.key')} and {folder / 'ca.crt'} to that machine "
          f"and start its client with --name {node} --tls-cert {made.name} --tls-key "
          f"{made.with_suffix('.key').name} --tls-ca ca.crt")


def _load_ca(folder: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate((folder / "ca.crt").read_bytes())
        key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), None)
    except OSError as exc:
        raise CertsError(f"cannot read the CA in {folder}: {exc.filename}: {exc.strerror} "
                         "(make it with: corral-master certs init)") from None
    except ValueError as exc:
        raise CertsError(f"the CA in {folder} is unreadable: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertsError(f"{folder / 'ca.key'} is not a key made by corral-master certs init")
    return cert, key


def _leaf(folder: Path, stem: str, common_name: str, sans: list[x509.GeneralName],
          usages: list[x509.ObjectIdentifier],
          ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], days: int) -> Path:
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (_builder(subject, ca_cert.subject, key.public_key(), now, days)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write_key(folder / f"{stem}.key", key)
    path = folder / f"{stem}.crt"
    _write(path, cert.public_bytes(serialization.Encoding.PEM))
    return path


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey,
             now: datetime.datetime, days: int) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))  # clocks differ a little
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key),
                           critical=False))


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    _write(path, key.private_bytes(serialization.Encoding.PEM,
                                   serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()), mode=0o600)


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write through a temporary file: a half-written key or certificate never exists."""
    temp = path.with_name(f".{path.name}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    os.replace(temp, path)
