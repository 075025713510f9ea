"""Signed tree heads in the C2SP formats, pure (no I/O, no clock):

  c2sp.org/signed-note       text + blank line + "— <key name> base64(4-byte key ID || signature)" lines;
                             vkeys "<name>+<hex key ID>+base64(type || public key)"; Ed25519 is type 0x01
  c2sp.org/tlog-checkpoint   note text = origin, tree size, base64 root hash, optional extension lines
  c2sp.org/tlog-cosignature  witness cosignature/v1, type 0x04: base64(key ID || u64 time || signature) over
                             "cosignature/v1\\ntime <t>\\n" + note text

Parsing and opening follow golang.org/x/mod/sumdb/note (Open), the reference the specs grew from.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from services.envelope.keys import PublicKey, SigningKey
from services.platform.errors import Error
from services.transparency.merkle import HASH_SIZE

SIG_ED25519 = 0x01
SIG_COSIGNATURE_V1 = 0x04
MAX_SIGNATURES = 100  # the spec asks verifiers to accept at least 16; Go's sumdb/note stops at 100
MAX_TIMESTAMP = 2**63 - 1

_SIG_PREFIX = "\u2014 "  # em dash, space
_SIZE = re.compile(r"0|[1-9][0-9]*")


class NoteError(Error):
    """A note, checkpoint or key was refused; `code` says which check, the detail what failed."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail, code)


def _valid_name(name: str) -> bool:
    return bool(name) and "+" not in name and not any(c.isspace() for c in name) and _valid_text(name)


def _valid_text(text: str) -> bool:
    """UTF-8 encodable, and no ASCII control characters other than newline."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return not any(c < " " and c != "\n" for c in text)


def _b64decode(text: str) -> bytes:
    """Standard, padded, canonical base64 only: one encoding per value, so nothing is malleable."""
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not standard base64: {text!r}") from exc
    if _b64encode(data) != text:
        raise ValueError(f"not canonical base64: {text!r}")
    return data


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode()


def key_id(name: str, sig_type: int, public_key: bytes) -> bytes:
    """SHA-256(name || 0x0A || type || public key)[:4], as signed-note recommends."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([sig_type]) + public_key).digest()[:4]


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: the note text of c2sp.org/tlog-checkpoint."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if any(not line or "\n" in line or not _valid_text(line) for line in (self.origin, *self.extensions)):
            raise ValueError("the origin and each extension line must be one non-empty line of text")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0:
            raise ValueError(f"tree size {self.size!r} is not a non-negative integer")
        if not isinstance(self.root_hash, bytes) or len(self.root_hash) != HASH_SIZE:
            raise ValueError(f"the root hash is {HASH_SIZE} bytes")

    def body(self) -> str:
        lines = [self.origin, str(self.size), _b64encode(self.root_hash), *self.extensions]
        return "".join(line + "\n" for line in lines)

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        if not text.endswith("\n"):
            raise NoteError("checkpoint_malformed", "a checkpoint ends with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise NoteError("checkpoint_malformed", "a checkpoint has an origin, a size and a root hash line")
        origin, size, root_b64, *extensions = lines
        if not _SIZE.fullmatch(size):
            raise NoteError("checkpoint_malformed", f"tree size {size!r} is not a plain decimal")
        try:
            root_hash = _b64decode(root_b64)
            return cls(origin, int(size), root_hash, tuple(extensions))
        except ValueError as exc:
            raise NoteError("checkpoint_malformed", f"checkpoint: {exc}") from exc


class Signer(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def key_id(self) -> bytes: ...
    def sign(self, text: bytes) -> bytes: ...


class Verifier(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def key_id(self) -> bytes: ...
    def verify(self, text: bytes, signature: bytes) -> bool: ...


class _Named:
    def __init__(self, name: str, sig_type: int, public_key: PublicKey) -> None:
        if not _valid_name(name):
            raise ValueError(f"key name {name!r} must be non-empty, without spaces or '+'")
        self._name = name
        self._key_id = key_id(name, sig_type, public_key.raw())
        self.public_key = public_key

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_id(self) -> bytes:
        return self._key_id


class NoteSigner(_Named):
    """Ed25519 (type 0x01) over the note text: how a log signs its checkpoints."""

    def __init__(self, name: str, key: SigningKey) -> None:
        super().__init__(name, SIG_ED25519, key.public())
        self._key = key

    def sign(self, text: bytes) -> bytes:
        return self._key.sign(text)

    def verifier(self) -> NoteVerifier:
        return NoteVerifier(self.name, self.public_key)


class NoteVerifier(_Named):
    def __init__(self, name: str, public_key: PublicKey) -> None:
        super().__init__(name, SIG_ED25519, public_key)

    def verify(self, text: bytes, signature: bytes) -> bool:
        return self.public_key.verify(signature, text)


def _cosigned_message(timestamp: int, text: bytes) -> bytes:
    return b"cosignature/v1\ntime %d\n" % timestamp + text


class CosignatureSigner(_Named):
    """A witness's Ed25519 cosignature/v1 (type 0x04) at a given time (POSIX seconds): the caller reads
    the clock, so signing stays pure. One key per witness name: the signed message omits the name."""

    def __init__(self, name: str, key: SigningKey, timestamp: int) -> None:
        super().__init__(name, SIG_COSIGNATURE_V1, key.public())
        if not 0 <= timestamp <= MAX_TIMESTAMP:
            raise ValueError(f"timestamp {timestamp} is outside 0..2^63-1")
        self._key = key
        self.timestamp = timestamp

    def sign(self, text: bytes) -> bytes:
        return self.timestamp.to_bytes(8, "big") + self._key.sign(_cosigned_message(self.timestamp, text))

    def verifier(self) -> CosignatureVerifier:
        return CosignatureVerifier(self.name, self.public_key)


class CosignatureVerifier(_Named):
    def __init__(self, name: str, public_key: PublicKey) -> None:
        super().__init__(name, SIG_COSIGNATURE_V1, public_key)

    def verify(self, text: bytes, signature: bytes) -> bool:
        if len(signature) != 8 + 64:
            return False
        timestamp = cosignature_timestamp(signature)
        if timestamp > MAX_TIMESTAMP:
            return False
        return self.public_key.verify(signature[8:], _cosigned_message(timestamp, text))


def cosignature_timestamp(signature: bytes) -> int:
    """The time a cosignature/v1 claims (the signature without its key ID); check it with a verifier."""
    return int.from_bytes(signature[:8], "big")


def vkey(name: str, public_key: PublicKey, sig_type: int = SIG_ED25519) -> str:
    """The verifier key text "<name>+<hex key ID>+<base64(type || key)>", for type 0x01 or 0x04."""
    if sig_type not in (SIG_ED25519, SIG_COSIGNATURE_V1):
        raise ValueError(f"signature type {sig_type:#04x} is not Ed25519 (0x01) or cosignature/v1 (0x04)")
    if not _valid_name(name):
        raise ValueError(f"key name {name!r} must be non-empty, without spaces or '+'")
    raw = public_key.raw()
    return f"{name}+{key_id(name, sig_type, raw).hex()}+{_b64encode(bytes([sig_type]) + raw)}"


def parse_vkey(text: str) -> NoteVerifier | CosignatureVerifier:
    """The verifier for a vkey; refuses a key ID that does not match its name and key."""
    name, _, rest = text.partition("+")
    hex_id, _, key_b64 = rest.partition("+")
    try:
        key = _b64decode(key_b64)
    except ValueError:
        key = b""
    if not (_valid_name(name) and len(hex_id) == 8 and all(c in string.hexdigits for c in hex_id) and key):
        raise NoteError("vkey_malformed", f"not a verifier key: {text!r}")
    if bytes.fromhex(hex_id) != key_id(name, key[0], key[1:]):
        raise NoteError("vkey_malformed", f"verifier key {name}+{hex_id}: the key ID does not match the key")
    if len(key) != 33 or key[0] not in (SIG_ED25519, SIG_COSIGNATURE_V1):
        raise NoteError("vkey_malformed", f"verifier key {name}+{hex_id}: not an Ed25519 or cosignature key")
    try:
        public_key = PublicKey.from_raw(name, key[1:])
    except ValueError as exc:
        raise NoteError("vkey_malformed", f"verifier key {name}+{hex_id}: {exc}") from exc
    if key[0] == SIG_ED25519:
        return NoteVerifier(name, public_key)
    return CosignatureVerifier(name, public_key)


def _check_body(body: str) -> bytes:
    if not body.endswith("\n") or not _valid_text(body):
        raise NoteError("note_malformed", "note text must end with a newline and hold no control characters")
    return body.encode()


def signature_line(body: str, signer: Signer) -> str:
    """One "— <name> <base64>" line: what a witness hands back to a log."""
    return f"{_SIG_PREFIX}{signer.name} {_b64encode(signer.key_id + signer.sign(_check_body(body)))}\n"


def sign_note(body: str, signers: Sequence[Signer]) -> str:
    if not signers:
        raise ValueError("a signed note needs at least one signer")
    return body + "\n" + "".join(signature_line(body, s) for s in signers)


@dataclass(frozen=True)
class NoteSignature:
    name: str
    key_id: bytes
    signature: bytes  # without the key ID


def parse_note(text: str) -> tuple[str, list[NoteSignature]]:
    """Split a signed note into its text and (unchecked) signatures, or raise NoteError."""
    if not _valid_text(text):
        raise NoteError("note_malformed", "a note is UTF-8 without control characters other than newline")
    split = text.rfind("\n\n")
    if split < 0 or not text.endswith("\n") or split + 2 == len(text):
        raise NoteError("note_malformed", "a note is text, a blank line, then signature lines")
    body, lines = text[: split + 1], text[split + 2 : -1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError("note_malformed", f"more than {MAX_SIGNATURES} signatures")
    signatures = []
    for line in lines:
        name, _, b64 = line.removeprefix(_SIG_PREFIX).partition(" ")
        try:
            raw = _b64decode(b64)
        except ValueError:
            raw = b""
        if not line.startswith(_SIG_PREFIX) or not _valid_name(name) or len(raw) < 5:
            raise NoteError("note_malformed", f"not a signature line: {line!r}")
        signatures.append(NoteSignature(name, raw[:4], raw[4:]))
    return body, signatures


def open_note(text: str, verifiers: Sequence[Verifier]) -> tuple[str, tuple[str, ...]]:
    """The note text and the names whose signatures verified, in note order. Signatures by unknown
    keys (name and key ID) are ignored; a known key's bad signature refuses the whole note, and so
    does a note no known key has signed."""
    body, signatures = parse_note(text)
    known: dict[tuple[str, bytes], list[Verifier]] = {}
    for v in verifiers:
        known.setdefault((v.name, v.key_id), []).append(v)
    signed = body.encode()
    verified: list[str] = []
    for sig in signatures:
        candidates = known.get((sig.name, sig.key_id), [])
        if len(candidates) > 1:
            raise NoteError(
                "note_ambiguous_key", f"more than one verifier for key {sig.name}+{sig.key_id.hex()}"
            )
        if not candidates:
            continue
        if not candidates[0].verify(signed, sig.signature):
            raise NoteError(
                "note_bad_signature", f"signature by {sig.name}+{sig.key_id.hex()} does not verify"
            )
        if sig.name not in verified:
            verified.append(sig.name)
    if not verified:
        raise NoteError("note_unverified", "no signature by a known key")
    return body, tuple(verified)


def open_checkpoint(
    text: str, origin: str, log: Verifier, cosigners: Sequence[Verifier] = ()
) -> tuple[Checkpoint, tuple[str, ...]]:
    """A checkpoint from `origin` signed by its log's key, and the cosigners whose signatures verified
    (after transparency-dev/formats log.ParseCheckpoint). Quorum policy is the caller's."""
    if any(c.name == log.name for c in cosigners):
        raise ValueError(f"a cosigner shares the log's key name {log.name!r}")
    body, names = open_note(text, [log, *cosigners])
    if log.name not in names:
        raise NoteError("note_unverified", f"the checkpoint is not signed by the log key {log.name}")
    checkpoint = Checkpoint.parse(body)
    if checkpoint.origin != origin:
        raise NoteError("note_wrong_origin", f"checkpoint origin {checkpoint.origin!r}, expected {origin!r}")
    return checkpoint, tuple(n for n in names if n != log.name)
