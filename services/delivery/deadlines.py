"""Deadlines after delivery: a copy unacknowledged past its priority's deadline escalates (to the recipient
again, and to the desk's alerts); a notice past its expires_at expires. Both overlay a delivery's progress
(delivered, fetched, acknowledged) rather than erase it, so the desk still sees how far a copy got."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.api import Alert
from schemas.events import Event, EventType
from services.delivery.errors import DeliveryError
from services.delivery.events import delivery_event
from services.delivery.models import Delivery, NoticeRow, Webhook, WebhookParked
from services.platform.database import utcnow
from services.platform.settings import Settings
from services.trust.models import Agency


@dataclass(frozen=True)
class Sla:
    flash: timedelta
    immediate: timedelta
    routine: timedelta

    @classmethod
    def of(cls, settings: Settings) -> Sla:
        return cls(
            timedelta(seconds=settings.sla_flash_s),
            timedelta(seconds=settings.sla_immediate_s),
            timedelta(seconds=settings.sla_routine_s),
        )

    def due(self, priority: str, delivered_at: datetime) -> datetime:
        wait: timedelta = getattr(self, priority)
        return delivered_at + wait


DEFAULT_SLA = Sla(timedelta(minutes=15), timedelta(hours=4), timedelta(days=3))


async def expire_due(session: AsyncSession, now: datetime | None = None, limit: int = 1000) -> list[Event]:
    """Marks copies of notices past their expires_at as expired (caller commits) and returns the events."""
    at = now or utcnow()
    query = (
        select(Delivery, NoticeRow)
        .join(NoticeRow, NoticeRow.notice_id == Delivery.notice_id)
        .where(NoticeRow.expires_at.is_not(None), NoticeRow.expires_at <= at, Delivery.expired_at.is_(None))
        .limit(limit)
        .with_for_update(of=Delivery, skip_locked=True)  # two ingest processes split the sweep
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
        .with_for_update(of=Delivery, skip_locked=True)  # each copy escalates once, whichever sweeps it
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


def _alert(kind: str, agency: str, notice: NoticeRow, since: datetime, detail: str) -> Alert:
    return Alert(
        kind=kind,
        agency=agency,
        notice_id=uuid.UUID(notice.notice_id),
        case_ref=notice.case_ref,
        priority=notice.priority,
        since=since,
        detail=detail,
    )


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
        _alert(
            "sla_escalation",
            agency,
            n,
            d.escalated_at,
            f"{n.priority} notice awaits your acknowledgement since {d.delivered_at.isoformat()}",
        )
        for d, n in (await session.execute(query)).all()
        if d.escalated_at is not None
    ]


async def overdue_alerts(session: AsyncSession, limit: int = 1000) -> list[Alert]:
    """Every copy that escalated and still waits for its acknowledgement (not recalled, not expired),
    most overdue first: for the desk."""
    query = (
        select(Delivery, NoticeRow)
        .join(NoticeRow, NoticeRow.notice_id == Delivery.notice_id)
        .where(Delivery.escalated_at.is_not(None), Delivery.state != "acknowledged")
        .where(Delivery.recalled_at.is_(None), Delivery.expired_at.is_(None))
        .where(Delivery.ack_due_at.is_not(None))  # an escalated copy has one; it lets the partial index serve
        .order_by(Delivery.ack_due_at)
        .limit(limit)
    )
    return [
        _alert(
            "sla_escalation",
            d.recipient,
            n,
            d.escalated_at,
            f"{n.priority} notice {d.state}, not acknowledged; was due {d.ack_due_at.isoformat()}",
        )
        for d, n in (await session.execute(query)).all()
        if d.escalated_at is not None and d.ack_due_at is not None
    ]


async def parked_alerts(session: AsyncSession) -> list[Alert]:
    """Deliveries a webhook gave up on and its agency has not replayed, oldest first: for the desk."""
    query = (
        select(WebhookParked, Webhook, NoticeRow)
        .join(Webhook, Webhook.id == WebhookParked.webhook_id)
        .join(NoticeRow, NoticeRow.notice_id == WebhookParked.notice_id)
        .where(WebhookParked.replayed_at.is_(None), Webhook.active)
        .order_by(WebhookParked.parked_at)
        .limit(1000)
    )
    return [
        _alert(
            "webhook_parked",
            hook.agency_id,
            notice,
            parked.parked_at,
            f"webhook {hook.id} to {urlsplit(hook.url).netloc} gave up after {parked.attempts} "
            f"attempts ({parked.last_error}); the notice waits in the inbox, or the agency replays it",
        )
        for parked, hook, notice in (await session.execute(query)).all()
    ]


async def desk_alerts(session: AsyncSession, viewer: str) -> list[Alert]:
    """What the desk must look at: overdue copies, then parked webhook deliveries. Only the desk sees them."""
    agency = await session.get(Agency, viewer)
    if agency is None or agency.kind != "desk":
        raise DeliveryError("not_the_desk", "alerts are the desk's")
    return await overdue_alerts(session) + await parked_alerts(session)
