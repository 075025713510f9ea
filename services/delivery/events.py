"""The facts delivery announces (delivered, fetched, acknowledged, replied, recalled, expired, escalated),
one event per notice and recipient, each with the id its fact always gets."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from schemas.events import Event, EventType, fact_id
from services.delivery.models import Delivery, NoticeRow
from services.platform.database import utcnow


def delivery_event(kind: EventType, notice: NoticeRow, recipient: str, actor: str) -> Event:
    return notice_event(
        kind, uuid.UUID(notice.notice_id), notice.case_ref, notice.envelope_sha256, recipient, actor, utcnow()
    )


def notice_event(
    kind: EventType,
    notice_id: uuid.UUID,
    case_ref: str,
    envelope_sha256: str,
    recipient: str,
    actor: str,
    at: datetime,
) -> Event:
    """The event of a fact about one recipient's copy of a notice."""
    return Event(
        event_id=fact_id(kind, str(notice_id), recipient),
        type=kind,
        occurred_at=at,
        actor=actor,
        agency=recipient,
        notice_id=notice_id,
        case_ref=case_ref,
        envelope_sha256=envelope_sha256,
    )


def fetched_events(rows: Sequence[tuple[Delivery, NoticeRow]], agency: str) -> list[Event]:
    """A fetch of each copy not fetched before."""
    return [
        delivery_event(EventType.notice_fetched, n, agency, agency) for d, n in rows if d.state == "delivered"
    ]
