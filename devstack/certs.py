"""Certificates for a broker closed to strangers: a small CA, the broker's certificate, and one client
certificate per identity, all PEM files in one folder, made once when missing.

The broker authenticates clients by their certificate (mutual TLS) and knows each as
``User:CN=deskbridge-<name>`` (services.platform.kafka.principal); its ACLs say what each may do. The
``intruder`` is signed by the same CA but granted nothing: the tests show what it is refused.
"""

from __future__ import annotations

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
        """The key and certificate in one file: Kafka's PEM key store (ssl.keystore.type=PEM)."""
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


def ensure_certificates(folder: Path) -> Certificates:
    """The certificates in `folder`, made first if any is missing (all of them again, under a new CA)."""
    certs = Certificates(Path(folder).resolve())
    wanted = [
        certs.ca,
        *(p for n in IDENTITIES for p in (certs.cert(n), certs.key(n))),
        certs.keystore(BROKER),
    ]
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
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        cert = builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
        key_pem = _write_key(certs.key(name), key)
        certs.cert(name).write_bytes(cert)
        if name == BROKER:
            certs.keystore(name).write_bytes(key_pem + cert)
            certs.keystore(name).chmod(0o600)
    return certs
