"""One notice's evidence bundle (docs/audit.md, "Evidence bundles"), gathered from the log, the directory
and the receipts the recipients signed: every leaf of the notice with its inclusion proof in a signed
checkpoint that covers them all, the receipts whose hashes those leaves hold, and the directory keys the
checks need with the leaves that registered them. evidence.py checks what this gathers."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.audit import (
    AuditLeaf,
    EvidenceBundle,
    EvidenceDirectory,
    EvidenceEvent,
    EvidenceKey,
    EvidenceReceipt,
)
from schemas.events import EventType
from services.envelope.compact import read_compact
from services.envelope.errors import EnvelopeError
from services.platform.database import utcnow
from services.platform.errors import Error
from services.transparency import checkpoints, storage
from services.transparency.checkpoints import Publisher
from services.transparency.models import AuditEntry, TlogCheckpoint
from services.transparency.note import CosignatureVerifier, parse_note
from services.transparency.service import leaves_where
from services.transparency.storage import TreeError, TreeMemory
from services.trust.models import AgencyKey
from services.trust.service import public_key
from services.trust.signed_directory import directory_key_entry

KEY_EVENTS = (EventType.key_registered.value, EventType.key_revoked.value)


class UnknownNotice(Error):
    code = "unknown_notice"


@dataclass(frozen=True)
class Acknowledgements:
    """What delivery stored of a notice: its sealed envelope's hash and each recipient's signed receipt."""

    envelope_sha256: str
    receipts: Mapping[str, str]  # agency -> compact JWS, as stored


# Delivery sits above the log in the layers, so the audit app hands its reader in (services/audit/app.py).
AcknowledgementSource = Callable[[AsyncSession, str], Awaitable[Acknowledgements | None]]


async def export_evidence(
    session: AsyncSession,
    publisher: Publisher,
    acknowledgements: AcknowledgementSource,
    notice_id: str,
    size: int | None = None,
    memory: TreeMemory | None = None,
) -> EvidenceBundle:
    """The bundle proved against the checkpoint of `size`, or by default the latest one, which is signed
    on the spot (as POST /v1/audit/checkpoints does) when the notice's newest leaf is not in it yet; the
    proofs over what `memory` knows of the tree."""
    newest = await _newest_seq(session, AuditEntry.notice_id == notice_id)
    if newest is None:
        raise UnknownNotice(f"the audit log has no event of notice {notice_id}")
    row = await _checkpoint_covering(session, publisher, newest, size)
    note = await checkpoints.published(session, row)
    leaves = await leaves_where(session, AuditEntry.notice_id == notice_id, AuditEntry.seq <= row.size)
    stored = await acknowledgements(session, notice_id)
    acked = {leaf.record.agency for leaf in leaves if leaf.record.event_type == EventType.notice_acknowledged}
    receipts = {a: r for a, r in (stored.receipts if stored else {}).items() if a in acked}
    keys = await _keys(session, list(receipts.values()), note, leaves)
    key_leaves = await leaves_where(
        session,
        AuditEntry.event_type.in_(KEY_EVENTS),
        AuditEntry.agency.in_(sorted({k.agency for k in keys})),
        AuditEntry.seq <= row.size,
    )
    kids = {k.kid for k in keys}
    return EvidenceBundle(
        notice_id=notice_id,
        case_ref=next((leaf.record.case_ref for leaf in leaves if leaf.record.case_ref), None),
        envelope_sha256=stored.envelope_sha256 if stored else _logged_envelope(leaves),
        origin=checkpoints.checkpoint_origin(row.note),
        checkpoint=note,
        tree_size=row.size,
        events=await _proved(session, leaves, row.size, memory),
        receipts=[
            EvidenceReceipt(agency=a, receipt=r, receipt_sha256=hashlib.sha256(r.encode()).hexdigest())
            for a, r in sorted(receipts.items())
        ],
        directory=EvidenceDirectory(
            keys=keys,
            events=await _proved(
                session,
                [leaf for leaf in key_leaves if leaf.record.details.get("kid") in kids],
                row.size,
                memory,
            ),
        ),
    )


async def _newest_seq(session: AsyncSession, where: ColumnElement[bool]) -> int | None:
    newest = (await session.execute(select(func.max(AuditEntry.seq)).where(where))).scalar()
    return int(newest) if newest is not None else None


async def _checkpoint_covering(
    session: AsyncSession, publisher: Publisher, seq: int, size: int | None
) -> TlogCheckpoint:
    if size is None:
        row = await checkpoints.latest_checkpoint(session)
        if row is None or row.size < seq:
            await session.rollback()  # end this read: the checkpoint is signed and committed elsewhere
            await publisher.publish()
        row = await checkpoints.checkpoint_row(session)
    else:
        row = await checkpoints.checkpoint_row(session, size)
    if row.size < seq:
        raise TreeError(f"checkpoint {row.size} does not cover the notice's leaf {seq - 1}", "tree_range")
    return row


def _logged_envelope(leaves: Sequence[AuditLeaf]) -> str | None:
    """Without a stored notice (never delivered): the envelope its submission named."""
    named = [leaf.record for leaf in leaves if leaf.record.envelope_sha256]
    submitted = [r for r in named if r.event_type == EventType.notice_submitted]
    return (submitted or named)[0].envelope_sha256 if named else None


async def _proved(
    session: AsyncSession, leaves: Sequence[AuditLeaf], size: int, memory: TreeMemory | None
) -> list[EvidenceEvent]:
    return [
        EvidenceEvent(
            index=leaf.index,
            leaf_hash=leaf.leaf_hash,
            record=leaf.record,
            inclusion_proof=[p.hex() for p in await storage.inclusion(session, leaf.index, size, memory)],
        )
        for leaf in leaves
    ]


async def _keys(
    session: AsyncSession, receipts: Sequence[str], note: str, leaves: Sequence[AuditLeaf]
) -> list[EvidenceKey]:
    """The receipts' signing keys, the witnesses' keys that made the checkpoint's cosignatures, and the
    sender's signing keys valid when the notice was submitted."""
    kids: set[str] = set()
    for token in receipts:
        try:
            kids.add(str(read_compact(token)[0].get("kid")))
        except EnvelopeError:
            continue  # not a JWS: the verifier says so; no key to add
    log_name = checkpoints.checkpoint_origin(note)
    cosigned = {(s.name, s.key_id) for s in parse_note(note)[1] if s.name != log_name}
    submitted = [
        (leaf.record.agency, datetime.fromisoformat(leaf.record.occurred_at))
        for leaf in leaves
        if leaf.record.event_type == EventType.notice_submitted and leaf.record.agency
    ]
    agencies = {name for name, _ in cosigned} | {agency for agency, _ in submitted}
    query = select(AgencyKey).where(
        AgencyKey.use == "sig",
        or_(AgencyKey.kid.in_(sorted(kids)), AgencyKey.agency_id.in_(sorted(agencies))),
    )
    now = utcnow()
    keys = []
    for row in (await session.execute(query.order_by(AgencyKey.created_at))).scalars():
        entry = directory_key_entry(row, now)
        witness = (row.agency_id, CosignatureVerifier(row.agency_id, public_key(row)).key_id) in cosigned
        sender = any(agency == row.agency_id and entry.valid_at(at) for agency, at in submitted)
        if row.kid in kids or witness or sender:
            keys.append(
                EvidenceKey(
                    agency=row.agency_id,
                    kid=row.kid,
                    use=row.use,
                    status=entry.status,
                    nbf=entry.nbf,
                    exp=entry.exp,
                    revoked_at=entry.revoked_at,
                    jwk=json.loads(row.jwk),
                )
            )
    return keys
