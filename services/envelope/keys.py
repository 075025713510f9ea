"""An agency's own key pair: generated and kept on the owner's machine, only public halves leave it."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from joserfc.jwk import OKPKey

from services.envelope.errors import KeyFileError

KEYS_FILE = "keys.jwks.json"


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 private key with its directory id; stays with its owner. The one door to the key: JOSE
    through this package, raw signatures for formats outside JOSE (C2SP notes), and the key itself only
    for a library that signs with it (RFC 9421 request signatures)."""

    agency: str
    kid: str
    key: OKPKey

    @classmethod
    def of(cls, agency: str, key: OKPKey) -> SigningKey:
        return cls(agency, key.thumbprint(), key)

    @classmethod
    def generate(cls, agency: str) -> SigningKey:
        return cls.of(agency, OKPKey.generate_key("Ed25519"))

    @classmethod
    def from_seed(cls, agency: str, seed: bytes) -> SigningKey:
        """The key a 32-byte Ed25519 seed makes (test vectors are given that way)."""
        return cls.of(agency, OKPKey.import_key(Ed25519PrivateKey.from_private_bytes(seed)))

    def ed25519(self) -> Ed25519PrivateKey:
        private = self.key.private_key
        if not isinstance(private, Ed25519PrivateKey):
            raise KeyFileError(f"key {self.kid} of {self.agency} is not an Ed25519 private key")
        return private

    def sign(self, message: bytes) -> bytes:
        """A raw Ed25519 signature (64 bytes)."""
        return self.ed25519().sign(message)

    def public(self) -> PublicKey:
        return PublicKey.from_jwk(self.agency, self.key.as_dict(private=False))

    def private_jwk(self) -> dict[str, Any]:
        return {**self.key.as_dict(private=True), "kid": self.kid, "use": "sig", "alg": "Ed25519"}


@dataclass(frozen=True)
class PublicKey:
    """An agency's public key from the directory: Ed25519 to verify, X25519 to encrypt to."""

    agency: str
    kid: str
    key: OKPKey

    @classmethod
    def from_jwk(cls, agency: str, jwk: Mapping[str, Any]) -> PublicKey:
        """A public JWK, its kid the RFC 7638 thumbprint; ValueError for one that carries a private part."""
        key = import_public(dict(jwk))
        return cls(agency, key.thumbprint(), key)

    @classmethod
    def from_raw(cls, agency: str, raw: bytes) -> PublicKey:
        """An Ed25519 public key given as its 32 raw bytes (as C2SP vkeys carry it)."""
        return cls.from_jwk(agency, OKPKey.import_key(Ed25519PublicKey.from_public_bytes(raw)).as_dict())

    def ed25519(self) -> Ed25519PublicKey:
        public = self.key.public_key
        if not isinstance(public, Ed25519PublicKey):
            raise KeyFileError(f"key {self.kid} of {self.agency} is not an Ed25519 key")
        return public

    def raw(self) -> bytes:
        return self.ed25519().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def verify(self, signature: bytes, message: bytes) -> bool:
        """Whether `signature` is this key's raw Ed25519 signature over `message`."""
        try:
            self.ed25519().verify(signature, message)
        except (InvalidSignature, KeyFileError):
            return False
        return True

    def jwk(self, use: str, alg: str) -> dict[str, Any]:
        return public_jwk(self.key, use, alg)


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
        return SigningKey.of(self.agency, self.signing)

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
        return [PublicKey.from_jwk(self.agency, j) for j in self.public_jwks()]

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


def generate_key_file(path: Path, agency: str) -> SigningKey:
    """A fresh Ed25519 key written as a private JWK readable by its owner only (the directory key, the
    audit log's key)."""
    key = SigningKey.generate(agency)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_owner_only(path, json.dumps(key.private_jwk(), indent=2))
    return key


def load_key_file(path: Path, agency: str, what: str) -> SigningKey:
    """The Ed25519 private key of a file generate_key_file wrote; `what` names it in the error."""
    try:
        key = SigningKey.of(agency, OKPKey.import_key(json.loads(path.read_text())))
    except FileNotFoundError as exc:
        raise KeyFileError(f"no {what} at {path}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyFileError(f"{path} is not {what}") from exc
    key.ed25519()  # refuses an X25519 or public-only key here, not at its first signature
    return key


def save_public_key(path: Path, key: PublicKey, use: str, alg: str) -> Path:
    """Pins a public key: a JWK file the owner of the folder trusts from now on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(key.jwk(use, alg), indent=2))
    return path


def load_public_key(path: Path, agency: str, what: str, missing: str) -> PublicKey:
    """A pinned public key; `what` names it, `missing` says what to do when there is none."""
    try:
        return PublicKey.from_jwk(agency, json.loads(path.read_text()))
    except FileNotFoundError as exc:
        raise KeyFileError(f"no pinned {what} at {path}; {missing}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyFileError(f"{path} is not a public JWK") from exc


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
