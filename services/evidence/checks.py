"""What an evidence bundle (one notice's leaves with their proofs, the recipients' receipts and the keys
that signed them; docs/audit.md, "Evidence bundles") must satisfy, checked against nothing but the log's
public key: pure, no I/O. Every check is reported, passed or failed, as a sentence naming what it looked
at, in the order docs/audit.md gives; console/src/evidence/verify.ts makes the same checks."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import ValidationError

from schemas.audit import EVIDENCE_FORMAT, EvidenceBundle, EvidenceEvent, EvidenceKey, EvidenceReceipt
from schemas.events import EventType
from services.envelope.compact import ED25519_OR_LEGACY, read_compact, verify_compact
from services.envelope.errors import EnvelopeError
from services.envelope.keys import PublicKey
from services.envelope.receipts import LAST_UNIX_SECOND, RECEIPT_TYP, Receipt
from services.transparency import merkle
from services.transparency.entries import record_leaf_hash
from services.transparency.note import (
    Checkpoint,
    CosignatureVerifier,
    NoteError,
    NoteVerifier,
    cosignature_timestamp,
    parse_note,
)
from services.transparency.verify import open_log_checkpoint


@dataclass(frozen=True)
class Check:
    check: str  # what was checked, e.g. "receipt of kh-cnp: signature"
    ok: bool
    detail: str  # what was found, as a sentence


def failures(checks: Iterable[Check]) -> list[str]:
    return [c.detail for c in checks if not c.ok]


def _time(t: int) -> str:
    if not 0 <= t <= LAST_UNIX_SECOND:  # a time no date of years 1970 to 9999 can show
        return f"{t} s"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _unhex(value: str) -> bytes:
    try:
        return bytes.fromhex(value)
    except ValueError:
        return b""


@dataclass(frozen=True)
class _Key:
    entry: EvidenceKey
    public: PublicKey


def check_evidence(bundle: EvidenceBundle, log: NoteVerifier) -> list[Check]:
    """Every check of docs/audit.md, in its order; the bundle passes when every one is ok."""
    checks = [_format(bundle)]
    checkpoint = _checkpoint(bundle, log, checks)
    keys = _keys(bundle.directory.keys, checks)
    checks += _cosignatures(bundle.checkpoint, log, keys)
    checks += _events(bundle, checkpoint)
    checks += _leaves("key event", bundle.directory.events, checkpoint)
    checks += _registrations(bundle, keys)
    checks += _receipts(bundle, keys)
    checks.append(_sender(bundle, keys))
    return checks


def _format(bundle: EvidenceBundle) -> Check:
    if bundle.format == EVIDENCE_FORMAT:
        return Check("format", True, f"the bundle is {EVIDENCE_FORMAT}")
    return Check("format", False, f"the bundle's format is {bundle.format!r}, not {EVIDENCE_FORMAT}")


def _checkpoint(bundle: EvidenceBundle, log: NoteVerifier, checks: list[Check]) -> Checkpoint | None:
    """Its signature by the pinned key, then its size and origin against the bundle's. A checkpoint
    whose signature fails is still read, so that every other check is reported against its root."""
    pinned = f"{log.name}+{log.key_id.hex()}"
    checkpoint: Checkpoint | None = None
    try:
        checkpoint = open_log_checkpoint(bundle.checkpoint, log, "the checkpoint")
        checks.append(
            Check(
                "checkpoint signature",
                True,
                f"checkpoint {checkpoint.size} is signed by the pinned log key {pinned}",
            )
        )
    except NoteError as exc:
        checks.append(
            Check(
                "checkpoint signature",
                False,
                f"checkpoint signature does not verify with the pinned log key {pinned} ({exc.detail})",
            )
        )
        try:
            checkpoint = Checkpoint.parse(parse_note(bundle.checkpoint)[0])
        except NoteError:
            checkpoint = None
    if checkpoint is None:
        checks.append(Check("tree size", False, "the checkpoint does not parse: no root to check against"))
    elif (checkpoint.size, checkpoint.origin) != (bundle.tree_size, bundle.origin):
        checks.append(
            Check(
                "tree size",
                False,
                f"the bundle says tree size {bundle.tree_size} of {bundle.origin}, its checkpoint "
                f"{checkpoint.size} of {checkpoint.origin}",
            )
        )
    else:
        checks.append(
            Check("tree size", True, f"the bundle's tree size {bundle.tree_size} is its checkpoint's")
        )
    return checkpoint


def _keys(entries: Sequence[EvidenceKey], checks: list[Check]) -> dict[str, _Key]:
    """The bundle's keys that are Ed25519 public keys named by their own thumbprint, by kid."""
    keys: dict[str, _Key] = {}
    for entry in entries:
        what = f"key {entry.agency}/{entry.kid}: public key"
        try:
            public = PublicKey.from_jwk(entry.agency, entry.jwk)
            public.ed25519()
        except Exception:  # noqa: BLE001 (any import failure: the JWK is not a usable key)
            checks.append(
                Check(what, False, f"key {entry.kid} of {entry.agency} is not an Ed25519 public JWK")
            )
            continue
        if entry.use != "sig" or public.kid != entry.kid or entry.jwk.get("kid", entry.kid) != entry.kid:
            checks.append(
                Check(what, False, f"key {entry.kid} of {entry.agency}: its kid is not its JWK's thumbprint")
            )
            continue
        checks.append(
            Check(what, True, f"key {entry.kid} of {entry.agency} is an Ed25519 key named by its thumbprint")
        )
        keys.setdefault(entry.kid, _Key(entry, public))
    return keys


def _cosignatures(note: str, log: NoteVerifier, keys: dict[str, _Key]) -> list[Check]:
    """Each witness's cosignature/v1 line, with that agency's key from the bundle's directory."""
    try:
        body, signatures = parse_note(note)
    except NoteError:
        return []  # the checkpoint check already failed on it
    checks = []
    for sig in signatures:
        if sig.name == log.name:
            continue
        what = f"cosignature of {sig.name}"
        witness = [
            (k.entry, v)
            for k in keys.values()
            if k.entry.agency == sig.name
            and (v := CosignatureVerifier(sig.name, k.public)).key_id == sig.key_id
        ]
        if not witness:
            checks.append(Check(what, False, f"{what}: the bundle holds no key of {sig.name} that made it"))
            continue
        entry, verifier = witness[0]
        at = cosignature_timestamp(sig.signature)
        if not verifier.verify(body.encode(), sig.signature):
            checks.append(Check(what, False, f"{what} does not verify with its key {entry.kid}"))
        elif not entry.valid_at(at):
            checks.append(Check(what, False, f"{what}: key {entry.kid} was not valid at {_time(at)}"))
        else:
            checks.append(Check(what, True, f"{what} verifies with key {entry.kid} (cosigned {_time(at)})"))
    return checks


def _leaves(kind: str, events: Sequence[EvidenceEvent], checkpoint: Checkpoint | None) -> list[Check]:
    """Each leaf against its record, and its inclusion proof against the checkpoint's root."""
    checks = []
    for i, event in enumerate(events):
        what = f"{kind} {i} ({event.record.event_type}, leaf {event.index})"
        leaf = record_leaf_hash(event.record)
        if leaf.hex() != event.leaf_hash:
            checks.append(Check(f"{what}: leaf hash", False, f"{what}: leaf hash does not match its record"))
        elif event.record.seq != event.index + 1:
            checks.append(
                Check(
                    f"{what}: leaf hash",
                    False,
                    f"{what}: holds entry {event.record.seq}, which is leaf {event.record.seq - 1}",
                )
            )
        else:
            checks.append(Check(f"{what}: leaf hash", True, f"{what}: leaf hash matches its record"))
        proof = [_unhex(p) for p in event.inclusion_proof]
        if checkpoint is not None and merkle.verify_inclusion(
            leaf, event.index, checkpoint.size, proof, checkpoint.root_hash
        ):
            detail = f"{what}: inclusion proof leads to the root of checkpoint {checkpoint.size}"
            checks.append(Check(f"{what}: inclusion proof", True, detail))
        else:
            detail = f"{what}: inclusion proof does not lead to the checkpoint root"
            checks.append(Check(f"{what}: inclusion proof", False, detail))
    return checks


def _events(bundle: EvidenceBundle, checkpoint: Checkpoint | None) -> list[Check]:
    """The notice's leaves: each one checked, about this notice and its envelope, all in log order."""
    checks = _leaves("event", bundle.events, checkpoint)
    for i, event in enumerate(bundle.events):
        record = event.record
        what = f"event {i} ({record.event_type}, leaf {event.index})"
        if record.notice_id != bundle.notice_id:
            detail = f"{what}: is about notice {record.notice_id}, not {bundle.notice_id}"
        elif record.envelope_sha256 not in (None, bundle.envelope_sha256):
            detail = f"{what}: names envelope {record.envelope_sha256}, not {bundle.envelope_sha256}"
        elif record.case_ref not in (None, bundle.case_ref):
            detail = f"{what}: names case {record.case_ref}, not {bundle.case_ref}"
        else:
            checks.append(Check(f"{what}: this notice", True, f"{what}: is about this notice and envelope"))
            continue
        checks.append(Check(f"{what}: this notice", False, detail))
    indexes = [e.index for e in bundle.events]
    if not indexes:
        checks.append(Check("events", False, "the bundle holds no event of the notice"))
    elif any(a >= b for a, b in zip(indexes, indexes[1:], strict=False)):
        checks.append(Check("events", False, "the events are not in log order, or one is there twice"))
    else:
        checks.append(
            Check("events", True, f"{len(indexes)} events of notice {bundle.notice_id}, in log order")
        )
    return checks


def _registrations(bundle: EvidenceBundle, keys: dict[str, _Key]) -> list[Check]:
    """Each key's registration to its agency is a leaf of the log; a logged revocation is not hidden."""
    checks = []
    for kid, key in keys.items():
        what = f"key {key.entry.agency}/{kid}: registered"
        logged = [e for e in bundle.directory.events if e.record.details.get("kid") == kid]
        registered = next(
            (
                e
                for e in logged
                if e.record.event_type == EventType.key_registered
                and e.record.agency == key.entry.agency
                and e.record.details.get("use") == "sig"
            ),
            None,
        )
        revoked = next((e for e in logged if e.record.event_type == EventType.key_revoked), None)
        if registered is None:
            detail = f"key {kid}: the bundle holds no leaf that registered it to {key.entry.agency}"
            checks.append(Check(what, False, detail))
        elif revoked is not None and key.entry.revoked_at is None:
            detail = f"key {kid}: revoked at leaf {revoked.index}, but the bundle lists it as not revoked"
            checks.append(Check(what, False, detail))
        else:
            detail = (
                f"key {kid}: registered to {key.entry.agency} at leaf {registered.index} "
                f"({registered.record.occurred_at})"
            )
            checks.append(Check(what, True, detail))
    return checks


def _receipts(bundle: EvidenceBundle, keys: dict[str, _Key]) -> list[Check]:
    """Each receipt is the one whose hash the recipient's notice.acknowledged leaf holds, signed by a key
    of that recipient valid when it signed, over this notice and envelope."""
    acks = {e.record.agency: e for e in bundle.events if e.record.event_type == EventType.notice_acknowledged}
    checks = []
    for receipt in bundle.receipts:
        checks.append(_logged(receipt, acks.get(receipt.agency)))
        checks += _signed(bundle, receipt, keys)
    held = {r.agency for r in bundle.receipts}
    for agency, ack in acks.items():
        if agency not in held:
            detail = f"receipt of {agency}: missing, though leaf {ack.index} logs its acknowledgement"
            checks.append(Check(f"receipt of {agency}: logged", False, detail))
    return checks


def _logged(receipt: EvidenceReceipt, ack: EvidenceEvent | None) -> Check:
    what = f"receipt of {receipt.agency}"
    digest = hashlib.sha256(receipt.receipt.encode()).hexdigest()
    if ack is None:
        return Check(f"{what}: logged", False, f"{what}: no notice.acknowledged leaf of {receipt.agency}")
    if ack.record.details.get("receipt_sha256") != digest:
        return Check(f"{what}: logged", False, f"{what}: receipt hash differs from the one logged")
    if receipt.receipt_sha256 != digest:
        return Check(f"{what}: logged", False, f"{what}: its receipt_sha256 is not the receipt's hash")
    return Check(f"{what}: logged", True, f"{what}: its hash is the one logged at leaf {ack.index}")


def _signed(bundle: EvidenceBundle, receipt: EvidenceReceipt, keys: dict[str, _Key]) -> list[Check]:
    what = f"receipt of {receipt.agency}"
    try:
        header, payload = read_compact(receipt.receipt)
        claims = Receipt.model_validate_json(payload)
    except (EnvelopeError, ValidationError):
        detail = f"{what}: not a compact JWS over a receipt"
        return [Check(f"{what}: signature", False, detail), Check(f"{what}: content", False, detail)]
    kid = str(header.get("kid"))
    key = keys.get(kid)
    if key is None:
        signature = Check(f"{what}: signature", False, f"{what}: signed with key {kid}, not in the bundle")
    elif key.entry.agency != receipt.agency:
        detail = f"{what}: signed with key {kid} of {key.entry.agency}"
        signature = Check(f"{what}: signature", False, detail)
    else:
        try:
            verify_compact(receipt.receipt, key.public, RECEIPT_TYP, ED25519_OR_LEGACY)
            signature = Check(f"{what}: signature", True, f"{what}: signature verifies with key {kid}")
        except EnvelopeError:
            signature = Check(
                f"{what}: signature", False, f"{what}: signature does not verify with key {kid}"
            )
    try:
        same_notice = claims.notice_id == uuid.UUID(bundle.notice_id)
    except ValueError:
        same_notice = False
    if not same_notice or claims.envelope_sha256 != bundle.envelope_sha256 or claims.agency != receipt.agency:
        detail = f"{what}: names another notice, envelope or agency"
        content = Check(f"{what}: content", False, detail)
    elif key is not None and not key.entry.valid_at(claims.iat):
        content = Check(f"{what}: content", False, f"{what}: key {kid} was not valid at {_time(claims.iat)}")
    else:
        detail = f"{what}: signed {_time(claims.iat)} over this notice and envelope"
        content = Check(f"{what}: content", True, detail)
    return [signature, content]


def _sender(bundle: EvidenceBundle, keys: dict[str, _Key]) -> Check:
    """The sender's signing keys, for a court that holds the sealed envelope and checks its signature."""
    submitted = next((e for e in bundle.events if e.record.event_type == EventType.notice_submitted), None)
    if submitted is None or submitted.record.agency is None:
        return Check("sender key", False, "the bundle holds no notice.submitted leaf naming the sender")
    sender = submitted.record.agency
    kids = sorted(kid for kid, k in keys.items() if k.entry.agency == sender)
    if not kids:
        return Check("sender key", False, f"the bundle holds no signing key of the sender {sender}")
    return Check(
        "sender key", True, f"{sender} sent it (leaf {submitted.index}); its key(s): {', '.join(kids)}"
    )
