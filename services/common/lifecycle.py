"""After delivery: the sender recalls a notice, or it expires. Both overlay a delivery's progress
(delivered, fetched, acknowledged) rather than erase it, so the desk still sees how far a copy got."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.api import Alert
from schemas.events import Event, EventType
from services.common.db import Delivery, NoticeRow, utcnow
from services.common.delivery import delivery_event

RECALL_TYPE = "org.deskbridge.notice.recall"


class RecallRequest(BaseModel):
    """A control record on the notices topic, keyed by case so it follows the notice it withdraws."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    notice_id: uuid.UUID
    case_ref: str
    sender: str
    requested_by: str
    requested_at: datetime
    reason: str | None = None


class RecallRefused(Exception):
    """A recall record that cannot be applied (unknown notice, not the sender): dead-lettered."""


async def apply_recall(session: AsyncSession, request: RecallRequest) -> list[Event]:
    """Marks the notice and every copy recalled (caller commits); idempotent on redelivery."""
    notice = await session.get(NoticeRow, str(request.notice_id))
    if notice is None:
        raise RecallRefused(f"notice {request.notice_id} was never delivered")
    if notice.sender != request.requested_by:
        raise RecallRefused(f"{request.requested_by} did not send notice {request.notice_id}")
    at = notice.recalled_at or request.requested_at
    notice.recalled_at = at
    await session.execute(
        update(Delivery)
        .where(Delivery.notice_id == notice.notice_id, Delivery.recalled_at.is_(None))
        .values(recalled_at=at)
    )
    deliveries = (
        await session.execute(select(Delivery).where(Delivery.notice_id == notice.notice_id))
    ).scalars()
    return [
        _with(delivery_event(EventType.notice_recalled, notice, d.recipient, request.requested_by), d)
        for d in deliveries
    ]


def _with(event: Event, delivery: Delivery) -> Event:
    # Whether the recipient had already read it: a recalled notice that was fetched is marked, not gone.
    return event.model_copy(update={"details": {"was_fetched": delivery.fetched_at is not None}})


async def expire_due(session: AsyncSession, now: datetime | None = None, limit: int = 1000) -> list[Event]:
    """Marks copies of notices past their expires_at as expired (caller commits) and returns the events."""
    at = now or utcnow()
    query = (
        select(Delivery, NoticeRow)
        .join(NoticeRow, NoticeRow.notice_id == Delivery.notice_id)
        .where(NoticeRow.expires_at.is_not(None), NoticeRow.expires_at <= at, Delivery.expired_at.is_(None))
        .limit(limit)
    )
    rows = list((await session.execute(query)).all())
    if not rows:
        return []
    await session.execute(
        update(Delivery).where(Delivery.seq.in_([d.seq for d, _ in rows])).values(expired_at=at)
    )
    return [delivery_event(EventType.notice_expired, n, d.recipient, "deskbridge/ingest") for d, n in rows]


async def escalate_due(session: AsyncSession, now: datetime | None = None, limit: int = 1000) -> list[Event]:
    """Marks copies past their acknowledgement deadline, still unacknowledged, as escalated (caller
    commits) and returns the events that re-notify the recipient and raise it for the desk."""
    at = now or utcnow()
    query = (
        select(Delivery, NoticeRow)
        .join(NoticeRow, NoticeRow.notice_id == Delivery.notice_id)
        .where(Delivery.ack_due_at.is_not(None), Delivery.ack_due_at <= at)
        .where(Delivery.state != "acknowledged", Delivery.escalated_at.is_(None))
        .where(Delivery.recalled_at.is_(None), Delivery.expired_at.is_(None))
        .limit(limit)
    )
    rows = list((await session.execute(query)).all())
    if not rows:
        return []
    await session.execute(
        update(Delivery).where(Delivery.seq.in_([d.seq for d, _ in rows])).values(escalated_at=at)
    )
    return [
        delivery_event(EventType.notice_escalated, n, d.recipient, "deskbridge/ingest").model_copy(
            update={"details": {"priority": n.priority, "state": d.state, "due": d.ack_due_at.isoformat()}}
        )
        for d, n in rows
        if d.ack_due_at is not None
    ]


async def escalated_since(session: AsyncSession, agency: str, since: datetime) -> list[Alert]:
    """The agency's copies that escalated after `since` and still wait for its acknowledgement."""
    query = (
        select(Delivery, NoticeRow)
        .join(NoticeRow, NoticeRow.notice_id == Delivery.notice_id)
        .where(Delivery.recipient == agency, Delivery.escalated_at > since)
        .where(Delivery.state != "acknowledged", Delivery.recalled_at.is_(None))
        .order_by(Delivery.escalated_at)
    )
    return [
        Alert(
            kind="sla_escalation",
            agency=agency,
            notice_id=uuid.UUID(n.notice_id),
            case_ref=n.case_ref,
            priority=n.priority,
            since=d.escalated_at,
            detail=f"{n.priority} notice awaits your acknowledgement since {d.delivered_at.isoformat()}",
        )
        for d, n in (await session.execute(query)).all()
        if d.escalated_at is not None
    ]


class EraseRefused(Exception):
    pass


async def erase_notice(session: AsyncSession, notice_id: str, actor: str, reason: str) -> Event:
    """Destroys the stored envelope: the notice's content key, wrapped for each recipient, goes with it,
    so no one can open it from deskbridge again. The audit leaves name the envelope only by its hash and
    stay as they are, so every proof and checkpoint still verifies. Caller commits."""
    notice = await session.get(NoticeRow, notice_id)
    if notice is None:
        raise EraseRefused(f"no notice {notice_id}")
    if notice.erased_at is not None:
        raise EraseRefused(f"notice {notice_id} was erased at {notice.erased_at.isoformat()}")
    notice.envelope, notice.erased_at = b"", utcnow()
    return Event(
        event_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"deskbridge:notice.erased:{notice_id}")),
        type=EventType.notice_erased,
        occurred_at=notice.erased_at,
        actor=actor,
        agency=notice.sender,
        notice_id=uuid.UUID(notice_id),
        case_ref=notice.case_ref,
        envelope_sha256=notice.envelope_sha256,
        details={"reason": reason[:200]},
    )
