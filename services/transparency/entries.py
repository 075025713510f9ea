"""What an audit entry is, pure (no I/O): its hash, chained to its predecessor's, and its Merkle leaf; and
the check of a run of entries against that chain. The log's storage is service.py and storage.py."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import Any

from schemas.audit import AuditRecord
from schemas.events import SAFE_INTEGER
from services.envelope.service import canonical_json, sha256_hex
from services.transparency import merkle

GENESIS_HASH = "0" * 64
DERIVED_FIELDS = frozenset({"prev_hash", "entry_hash"})
_HEX = re.compile(r"[0-9a-f]{64}")


def entry_hash(record: AuditRecord) -> str:
    """SHA-256 over the canonical JSON of every field but the hash itself, the previous hash included."""
    return sha256_hex(_canonical(record.model_dump(exclude={"entry_hash"})))


_STRING = encode_basestring  # a str as json.dumps(ensure_ascii=False) writes it, in C
# What canonical_json(plain=True) writes, its encoder built once (json.dumps builds one per call).
_PLAIN_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode
_ROW_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_BEYOND_BMP = re.compile("[\U00010000-\U0010ffff]")

# An entry as a row: the audit_log table's columns, in its order (services/transparency/models.py).
ROW = (
    *("seq", "event_id", "event_type", "occurred_at", "recorded_at", "actor", "agency", "notice_id"),
    *("case_ref", "envelope_sha256", "details", "prev_hash", "entry_hash"),
)


def chained(
    seq: int,
    event_id: str,
    event_type: str,
    occurred_at: str,
    recorded_at: str,
    actor: str,
    agency: str | None,
    notice_id: str | None,
    case_ref: str | None,
    envelope_sha256: str | None,
    details: dict[str, Any],
    prev_hash: str,
) -> tuple[str, bytes, str]:
    """(entry hash, Merkle leaf hash, row) of the record with these fields (an AuditRecord's but
    entry_hash, as model_dump writes them): what entry_hash and record_leaf_hash give, without building
    the record, and with one canonical encoding, not two: the entry hash covers the leaf's JSON with
    prev_hash added between occurred_at and recorded_at, where it sorts. The row is the entry as a JSON
    array of its columns (ROW), its details as their canonical JSON text. A plain record (_plain) is
    written field by field in key order, each string escaped once for the hashes and the row, its only
    object (details) by the C encoder; any other goes through canonical_json whole."""
    if not _HEX.fullmatch(prev_hash):
        raise ValueError("prev_hash is not a SHA-256 in lowercase hex")
    if not _plain(seq, details):
        record: dict[str, Any] = {  # in ROW's order
            "seq": seq,
            "event_id": event_id,
            "event_type": event_type,
            "occurred_at": occurred_at,
            "recorded_at": recorded_at,
            "actor": actor,
            "agency": agency,
            "notice_id": notice_id,
            "case_ref": case_ref,
            "envelope_sha256": envelope_sha256,
            "details": details,
        }
        data = _canonical(record)
        at = data.rindex(b',"recorded_at":') + 1  # the last such key: details, the only object, is before
        entry = sha256_hex(b"".join((data[:at], b'"prev_hash":"', prev_hash.encode(), b'",', data[at:])))
        record["details"] = canonical_json(details).decode()
        return entry, merkle.leaf_hash(data), _ROW_JSON([*record.values(), prev_hash, entry])
    text = _PLAIN_JSON(details)
    event_id, event_type, occurred_at = _STRING(event_id), _STRING(event_type), _STRING(occurred_at)
    recorded_at, actor = _STRING(recorded_at), _STRING(actor)
    agency = "null" if agency is None else _STRING(agency)
    notice_id = "null" if notice_id is None else _STRING(notice_id)
    case_ref = "null" if case_ref is None else _STRING(case_ref)
    envelope_sha256 = "null" if envelope_sha256 is None else _STRING(envelope_sha256)
    head = (
        f'{{"actor":{actor},"agency":{agency},"case_ref":{case_ref},"details":{text},'
        f'"envelope_sha256":{envelope_sha256},"event_id":{event_id},"event_type":{event_type},'
        f'"notice_id":{notice_id},"occurred_at":{occurred_at},'
    )
    tail = f'"recorded_at":{recorded_at},"seq":{int(seq)}}}'
    entry = sha256_hex(f'{head}"prev_hash":"{prev_hash}",{tail}'.encode())
    row = (
        f"[{int(seq)},{event_id},{event_type},{occurred_at},{recorded_at},{actor},{agency},{notice_id},"
        f'{case_ref},{envelope_sha256},{_STRING(text)},"{prev_hash}","{entry}"]'
    )
    return entry, merkle.leaf_hash((head + tail).encode()), row


def stored_leaf_hash(row: Sequence[Any]) -> bytes:
    """The Merkle leaf of an entry as read back, its columns in ROW's order (details as their JSON text):
    record_leaf_hash of the record it is, without building the record. The leaf covers neither chain
    hash, so chained() is given any well-formed prev_hash. ValueError or TypeError: not an entry's data
    (details that are not a JSON object of names)."""
    seq, event_id, event_type, occurred_at, recorded_at, actor = row[:6]
    agency, notice_id, case_ref, envelope_sha256, details = row[6:11]
    fields = json.loads(details)
    if not isinstance(fields, dict):
        raise TypeError("details are not a JSON object")
    return chained(
        seq,
        event_id,
        event_type,
        occurred_at,
        recorded_at,
        actor,
        agency,
        notice_id,
        case_ref,
        envelope_sha256,
        fields,
        GENESIS_HASH,
    )[1]


def leaf_data(record: AuditRecord) -> bytes:
    """The Merkle leaf: canonical JSON of the record without its derived chain hashes. It holds metadata
    and envelope hashes only, so erasing a person (destroying a notice's keys) never changes a leaf."""
    return _canonical(record.model_dump(exclude=set(DERIVED_FIELDS)))


def _canonical(fields: dict[str, Any]) -> bytes:
    return canonical_json(fields, plain=_plain(fields["seq"], fields["details"]))


def _plain(seq: int, details: dict[str, Any]) -> bool:
    # A record holds no floats and its details only safe integers (its schema), so it is plain JSON for
    # canonical_json unless its seq passed 2**53 or a detail's name reaches beyond the BMP.
    return seq <= SAFE_INTEGER and not _BEYOND_BMP.search("".join(details))


def record_leaf_hash(record: AuditRecord) -> bytes:
    return merkle.leaf_hash(leaf_data(record))


@dataclass(frozen=True)
class ChainBreak:
    seq: int
    reason: str


def verify_chain(
    records: Iterable[AuditRecord], start_hash: str = GENESIS_HASH, start_seq: int = 1
) -> list[ChainBreak]:
    """Every break in the chain, named: a gap or reorder in seq, a broken link, an altered entry."""
    breaks: list[ChainBreak] = []
    expected_seq, prev = start_seq, start_hash
    for record in records:
        if record.seq != expected_seq:
            breaks.append(ChainBreak(record.seq, f"expected entry {expected_seq}, found {record.seq}"))
        if record.prev_hash != prev:
            breaks.append(ChainBreak(record.seq, "does not link to the previous entry's hash"))
        if entry_hash(record) != record.entry_hash:
            breaks.append(ChainBreak(record.seq, "content does not match its hash (altered entry)"))
        expected_seq, prev = record.seq + 1, record.entry_hash
    return breaks
