"""Certificates for a broker closed to strangers: a small CA, the broker's certificate, and one client
certificate per identity, all PEM files in one folder, made once when missing.

The broker authenticates clients by their certificate (mutual TLS) and knows each as
``User:CN=deskbridge-<name>`` (services.platform.kafka.principal); its ACLs say what each may do. The
``intruder`` is signed by the same CA but granted nothing: the tests show what it is refused.

For Compose (docs/deploy.md), with the broker's host name on its certificate::

    python -m devstack.certs deploy/secrets/kafka --broker-host kafka
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

BROKER = "broker"
ADMIN = "admin"  # a super user: makes the topics and the ACLs
IDENTITIES = (BROKER, ADMIN, "gateway", "ingest", "audit", "intruder")
_VALID = datetime.timedelta(days=825)


@dataclass(frozen=True)
class Certificates:
    """The folder of PEM files: ``ca.crt``, and ``<name>.crt`` with ``<name>.key`` per identity."""

    folder: Path

    @property
    def ca(self) -> Path:
        return self.folder / "ca.crt"

    def cert(self, name: str) -> Path:
        return self.folder / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.folder / f"{name}.key"

    def keystore(self, name: str) -> Path:
        """The key and certificate in one file: a Kafka PEM key store (ssl.keystore.type=PEM), for the
        broker and for Kafka's own tools."""
        return self.folder / f"{name}.pem"

    def settings(self, name: str) -> dict[str, str]:
        """The DESKBRIDGE_KAFKA_* settings (services/platform/settings.py) of a client with this identity."""
        return {
            "DESKBRIDGE_KAFKA_SECURITY_PROTOCOL": "SSL",
            "DESKBRIDGE_KAFKA_CA_FILE": str(self.ca),
            "DESKBRIDGE_KAFKA_CERT_FILE": str(self.cert(name)),
            "DESKBRIDGE_KAFKA_KEY_FILE": str(self.key(name)),
        }

    def fields(self, name: str) -> dict[str, Any]:
        """The same as Settings field values, for ``Settings.model_copy(update=...)``."""
        return {
            "kafka_security_protocol": "SSL",
            "kafka_ca_file": self.ca,
            "kafka_cert_file": self.cert(name),
            "kafka_key_file": self.key(name),
        }


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> bytes:
    # Unencrypted PKCS#8: what Kafka's PEM key store reads without ssl.key.password, and Python's ssl.
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.write_bytes(pem)
    path.chmod(0o600)
    return pem


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def ensure_certificates(folder: Path, broker_hosts: tuple[str, ...] = ()) -> Certificates:
    """The certificates in `folder`, made first if any is missing (all of them again, under a new CA).
    The broker's names the loopback addresses and `broker_hosts`: what clients dial."""
    certs = Certificates(Path(folder).resolve())
    files = (certs.cert, certs.key, certs.keystore)
    wanted = [certs.ca, *(file(name) for name in IDENTITIES for file in files)]
    if all(path.exists() for path in wanted):
        return certs
    certs.folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("deskbridge development CA")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALID)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(certs.folder / "ca.key", ca_key)
    certs.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for name in IDENTITIES:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(f"deskbridge-{name}"))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _VALID)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]),
                critical=False,
            )
        )
        if name == BROKER:  # clients and the other brokers check the name they dialled
            hosts = ("localhost", "127.0.0.1", *broker_hosts)
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_san(host) for host in hosts]), critical=False
            )
        cert = builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
        key_pem = _write_key(certs.key(name), key)
        certs.cert(name).write_bytes(cert)
        certs.keystore(name).write_bytes(key_pem + cert)
        certs.keystore(name).chmod(0o600)
    return certs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Make the Kafka CA and identities' certificates if missing.")
    parser.add_argument("folder", type=Path)
    parser.add_argument(
        "--broker-host", action="append", default=[], help="a name clients dial the broker by"
    )
    args = parser.parse_args(argv)
    certs = ensure_certificates(args.folder, tuple(args.broker_host))
    print(
        f"Kafka certificates in {certs.folder}: ca.crt, and <name>.crt/.key/.pem for {', '.join(IDENTITIES)}"
    )


if __name__ == "__main__":
    main()
