"""The audit log: its entries (each a leaf of the Merkle tree in tlog.py, and also hash-chained to its
predecessor), pure hashing and checking, plus the one append path, which writes entries and tree nodes
in one transaction."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.audit import AuditRecord
from schemas.events import Event
from services.common import merkle, tlog
from services.common.db import AuditEntry
from services.common.envelope import canonical_json, sha256_hex

GENESIS_HASH = "0" * 64
DERIVED_FIELDS = frozenset({"prev_hash", "entry_hash"})


def entry_hash(record: AuditRecord) -> str:
    """SHA-256 over the canonical JSON of every field but the hash itself, the previous hash included."""
    return sha256_hex(canonical_json(record.model_dump(exclude={"entry_hash"})))


def leaf_data(record: AuditRecord) -> bytes:
    """The Merkle leaf: canonical JSON of the record without its derived chain hashes. It holds metadata
    and envelope hashes only, so erasing a person (destroying a notice's keys) never changes a leaf."""
    return canonical_json(record.model_dump(exclude=set(DERIVED_FIELDS)))


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


def to_record(row: AuditEntry) -> AuditRecord:
    return AuditRecord(
        seq=row.seq,
        event_id=row.event_id,
        event_type=row.event_type,
        occurred_at=row.occurred_at,
        recorded_at=row.recorded_at,
        actor=row.actor,
        agency=row.agency,
        notice_id=row.notice_id,
        case_ref=row.case_ref,
        envelope_sha256=row.envelope_sha256,
        details=json.loads(row.details),
        prev_hash=row.prev_hash,
        entry_hash=row.entry_hash,
    )


async def head(session: AsyncSession) -> tuple[int, str]:
    row = (await session.execute(select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(1))).scalar()
    return (row.seq, row.entry_hash) if row is not None else (0, GENESIS_HASH)


async def append(session: AsyncSession, events: Sequence[Event]) -> int:
    """Appends the events not yet in the log, in order, with the tree nodes they complete; returns how
    many were new. Caller commits: entries and nodes land together or not at all."""
    if session.get_bind().dialect.name == "postgresql":
        # One writer at a time keeps seq contiguous, the chain linear and the tree's right edge ours;
        # readers are not blocked. SQLite has a single writer anyway.
        await session.execute(text("LOCK TABLE audit_log IN EXCLUSIVE MODE"))
    ids = {e.event_id for e in events}
    seen = set(
        (await session.execute(select(AuditEntry.event_id).where(AuditEntry.event_id.in_(ids)))).scalars()
    )
    seq, prev = await head(session)
    size = seq
    leaves: list[bytes] = []
    recorded_at = datetime.now(UTC).isoformat()
    for event in events:
        if event.event_id in seen:
            continue
        seen.add(event.event_id)
        seq += 1
        record = AuditRecord(
            seq=seq,
            event_id=event.event_id,
            event_type=event.type.value,
            occurred_at=event.occurred_at.astimezone(UTC).isoformat(),
            recorded_at=recorded_at,
            actor=event.actor,
            agency=event.agency,
            notice_id=str(event.notice_id) if event.notice_id else None,
            case_ref=event.case_ref,
            envelope_sha256=event.envelope_sha256,
            details=event.details,
            prev_hash=prev,
            entry_hash=GENESIS_HASH,
        )
        record = record.model_copy(update={"entry_hash": entry_hash(record)})
        session.add(
            AuditEntry(**{**record.model_dump(exclude={"details"}), "details": json.dumps(record.details)})
        )
        prev = record.entry_hash
        leaves.append(record_leaf_hash(record))
    await tlog.add_leaves(session, size, leaves)
    await session.flush()
    return len(leaves)


async def count(session: AsyncSession) -> int:
    return int((await session.execute(select(func.count()).select_from(AuditEntry))).scalar_one())
