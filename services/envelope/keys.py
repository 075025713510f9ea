"""An agency's own key pair: generated and kept on the owner's machine, only public halves leave it."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc.jwk import OKPKey

from services.envelope.errors import KeyFileError

KEYS_FILE = "keys.jwks.json"


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 private key with its directory id; stays with its owner."""

    agency: str
    kid: str
    key: OKPKey


@dataclass(frozen=True)
class PublicKey:
    """An agency's public key from the directory: Ed25519 to verify, X25519 to encrypt to."""

    agency: str
    kid: str
    key: OKPKey


@dataclass(frozen=True)
class AgencyKeys:
    """Private signing (Ed25519) and decryption (X25519) keys of one agency: the current pair, and the
    pairs it rotated away from, kept so notices sealed to an old key still open."""

    agency: str
    signing: OKPKey
    encryption: OKPKey
    previous: tuple[OKPKey, ...] = ()

    @classmethod
    def generate(cls, agency: str) -> AgencyKeys:
        return cls(agency, OKPKey.generate_key("Ed25519"), OKPKey.generate_key("X25519"))

    def rotated(self) -> AgencyKeys:
        """A fresh current pair; the old pair joins `previous`."""
        fresh = AgencyKeys.generate(self.agency)
        return AgencyKeys(
            self.agency, fresh.signing, fresh.encryption, (*self.previous, self.signing, self.encryption)
        )

    @property
    def signing_kid(self) -> str:
        return self.signing.thumbprint()

    @property
    def encryption_kid(self) -> str:
        return self.encryption.thumbprint()

    def signer(self) -> SigningKey:
        return SigningKey(self.agency, self.signing_kid, self.signing)

    def decryption_keys(self) -> dict[str, OKPKey]:
        """Every X25519 key this agency ever held, by kid: the current one and the rotated ones."""
        keys = [k for k in self.previous if k.curve_name == "X25519"] + [self.encryption]
        return {k.thumbprint(): k for k in keys}

    def public_jwks(self) -> list[dict[str, Any]]:
        """The current public halves as JWKs with kid (RFC 7638 thumbprint), use and alg."""
        return [
            public_jwk(self.signing, use="sig", alg="Ed25519"),
            public_jwk(self.encryption, use="enc", alg="ECDH-ES+A256KW"),
        ]

    def public_keys(self) -> list[PublicKey]:
        return [PublicKey(self.agency, j["kid"], import_public(j)) for j in self.public_jwks()]

    def save(self, directory: Path) -> Path:
        """Writes the private keys readable by the owner only; the current pair comes last."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / KEYS_FILE
        keys = [*self.previous, self.signing, self.encryption]
        document = {"agency": self.agency, "keys": [_private_jwk(k) for k in keys]}
        write_owner_only(path, json.dumps(document, indent=2))
        return path

    @classmethod
    def load(cls, directory: Path) -> AgencyKeys:
        path = directory / KEYS_FILE
        try:
            document = json.loads(path.read_text())
            keys = [(k["use"], OKPKey.import_key(k)) for k in document["keys"]]
            signing = [k for use, k in keys if use == "sig"]
            encryption = [k for use, k in keys if use == "enc"]
            current = (signing[-1], encryption[-1])
            previous = tuple(k for _, k in keys if k not in current)
            return cls(document["agency"], *current, previous)
        except FileNotFoundError as exc:
            raise KeyFileError(f"no key file at {path}") from exc
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            raise KeyFileError(f"{path} is not a deskbridge key file") from exc


def _private_jwk(key: OKPKey) -> dict[str, Any]:
    use, alg = ("sig", "Ed25519") if key.curve_name == "Ed25519" else ("enc", "ECDH-ES+A256KW")
    return {**key.as_dict(private=True), "kid": key.thumbprint(), "use": use, "alg": alg}


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


class DeskKeyFile:
    """The desk's key file, re-read when it changes: `deskbridge keys rotate --as kr-desk` takes effect
    without a restart."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / KEYS_FILE
        self._stamp: tuple[int, int] | None = None
        self._keys: AgencyKeys | None = None

    def current(self) -> AgencyKeys:
        """The keys as the file holds them now; KeyFileError if it is gone or unreadable."""
        try:
            stat = self.path.stat()
        except FileNotFoundError as exc:
            raise KeyFileError(f"no key file at {self.path}") from exc
        stamp = (stat.st_mtime_ns, stat.st_size)
        if self._keys is None or stamp != self._stamp:
            self._keys = AgencyKeys.load(self.path.parent)
            self._stamp = stamp
        return self._keys
