"""What an audit entry is, pure (no I/O): its hash, chained to its predecessor's, and its Merkle leaf; and
the check of a run of entries against that chain. The log's storage is service.py and storage.py."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
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
_KEYS = frozenset(AuditRecord.model_fields) - {"entry_hash"}
# What canonical_json(plain=True) writes, its encoder built once (json.dumps builds one per call).
_PLAIN_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode
_BEYOND_BMP = re.compile("[\U00010000-\U0010ffff]")


def chained(fields: dict[str, Any]) -> tuple[str, bytes, str]:
    """(entry hash, Merkle leaf hash, the details' canonical JSON) of a record given as the fields of an
    AuditRecord but entry_hash, as model_dump writes them: what entry_hash and record_leaf_hash give,
    without building the record, and with one canonical encoding, not two: the entry hash covers the
    leaf's JSON with prev_hash added between occurred_at and recorded_at, where it sorts. A plain record
    (_plain) is written field by field in key order, its only object (details) by the C encoder; any
    other goes through canonical_json whole."""
    prev = fields["prev_hash"]
    if not _HEX.fullmatch(prev):
        raise ValueError("prev_hash is not a SHA-256 in lowercase hex")
    if fields.keys() != _KEYS:
        raise ValueError("the fields are not an audit record's")
    if not _plain(fields):
        leaf_fields = {name: value for name, value in fields.items() if name != "prev_hash"}
        data = _canonical(leaf_fields)
        at = data.rindex(b',"recorded_at":') + 1  # the last such key: details, the only object, is before
        entry = b"".join((data[:at], b'"prev_hash":"', prev.encode(), b'",', data[at:]))
        details = canonical_json(fields["details"]).decode()
        return sha256_hex(entry), merkle.leaf_hash(data), details
    details = _PLAIN_JSON(fields["details"])
    head = "".join(
        (
            '{"actor":',
            _STRING(fields["actor"]),
            ',"agency":',
            _json_text(fields["agency"]),
            ',"case_ref":',
            _json_text(fields["case_ref"]),
            ',"details":',
            details,
            ',"envelope_sha256":',
            _json_text(fields["envelope_sha256"]),
            ',"event_id":',
            _STRING(fields["event_id"]),
            ',"event_type":',
            _STRING(fields["event_type"]),
            ',"notice_id":',
            _json_text(fields["notice_id"]),
            ',"occurred_at":',
            _STRING(fields["occurred_at"]),
            ",",
        )
    )
    tail = f'"recorded_at":{_STRING(fields["recorded_at"])},"seq":{int(fields["seq"])}}}'
    entry_data = f'{head}"prev_hash":"{prev}",{tail}'.encode()
    return sha256_hex(entry_data), merkle.leaf_hash((head + tail).encode()), details


def _json_text(value: str | None) -> str:
    return "null" if value is None else _STRING(value)


def leaf_data(record: AuditRecord) -> bytes:
    """The Merkle leaf: canonical JSON of the record without its derived chain hashes. It holds metadata
    and envelope hashes only, so erasing a person (destroying a notice's keys) never changes a leaf."""
    return _canonical(record.model_dump(exclude=set(DERIVED_FIELDS)))


def _canonical(fields: dict[str, Any]) -> bytes:
    return canonical_json(fields, plain=_plain(fields))


def _plain(fields: dict[str, Any]) -> bool:
    # A record holds no floats and its details only safe integers (its schema), so it is plain JSON for
    # canonical_json unless its seq passed 2**53 or a detail's name reaches beyond the BMP.
    return fields["seq"] <= SAFE_INTEGER and not _BEYOND_BMP.search("".join(fields["details"]))


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
