"""An agency's own key pair: generated and kept on the owner's machine, only public halves leave it."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc.jwk import OKPKey

from services.common.envelope import PublicKey, SigningKey

KEYS_FILE = "keys.jwks.json"


@dataclass(frozen=True)
class AgencyKeys:
    """Private signing (Ed25519) and decryption (X25519) keys of one agency."""

    agency: str
    signing: OKPKey
    encryption: OKPKey

    @classmethod
    def generate(cls, agency: str) -> AgencyKeys:
        return cls(agency, OKPKey.generate_key("Ed25519"), OKPKey.generate_key("X25519"))

    @property
    def signing_kid(self) -> str:
        return self.signing.thumbprint()

    @property
    def encryption_kid(self) -> str:
        return self.encryption.thumbprint()

    def signer(self) -> SigningKey:
        return SigningKey(self.agency, self.signing_kid, self.signing)

    def decryption_keys(self) -> dict[str, OKPKey]:
        return {self.encryption_kid: self.encryption}

    def public_jwks(self) -> list[dict[str, Any]]:
        """The public halves as JWKs with kid (RFC 7638 thumbprint), use and alg: what the directory holds."""
        return [
            public_jwk(self.signing, use="sig", alg="Ed25519"),
            public_jwk(self.encryption, use="enc", alg="ECDH-ES+A256KW"),
        ]

    def public_keys(self) -> list[PublicKey]:
        return [
            PublicKey(
                self.agency, self.signing_kid, import_public(public_jwk(self.signing, "sig", "Ed25519"))
            ),
            PublicKey(
                self.agency,
                self.encryption_kid,
                import_public(public_jwk(self.encryption, "enc", "ECDH-ES+A256KW")),
            ),
        ]

    def save(self, directory: Path) -> Path:
        """Writes the private keys readable by the owner only."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / KEYS_FILE
        document = {
            "agency": self.agency,
            "keys": [
                {
                    **self.signing.as_dict(private=True),
                    "kid": self.signing_kid,
                    "use": "sig",
                    "alg": "Ed25519",
                },
                {
                    **self.encryption.as_dict(private=True),
                    "kid": self.encryption_kid,
                    "use": "enc",
                    "alg": "ECDH-ES+A256KW",
                },
            ],
        }
        write_owner_only(path, json.dumps(document, indent=2))
        return path

    @classmethod
    def load(cls, directory: Path) -> AgencyKeys:
        path = directory / KEYS_FILE
        try:
            document = json.loads(path.read_text())
            by_use = {k["use"]: OKPKey.import_key(k) for k in document["keys"]}
            return cls(document["agency"], by_use["sig"], by_use["enc"])
        except FileNotFoundError as exc:
            raise KeyFileError(f"no key file at {path}") from exc
        except (KeyError, ValueError, TypeError) as exc:
            raise KeyFileError(f"{path} is not a deskbridge key file") from exc


class KeyFileError(Exception):
    pass


def write_owner_only(path: Path, text: str) -> None:
    """Writes a secret readable by its owner only, also when a looser file was there before."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # O_CREAT's mode applies only to new files
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def public_jwk(key: OKPKey, use: str, alg: str) -> dict[str, Any]:
    return {**key.as_dict(private=False), "kid": key.thumbprint(), "use": use, "alg": alg}


def import_public(jwk: dict[str, Any]) -> OKPKey:
    """Imports a directory JWK, refusing anything that carries a private part."""
    if "d" in jwk:
        raise ValueError("a public key must not carry its private part")
    key = OKPKey.import_key({k: v for k, v in jwk.items() if k in ("kty", "crv", "x")})
    return key
