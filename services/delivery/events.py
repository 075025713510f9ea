"""The facts delivery announces (delivered, fetched, acknowledged, replied, recalled, expired, escalated),
one event per notice and recipient, each with the id its fact always gets."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from schemas.events import Event, EventType, fact_id
from services.delivery.models import Delivery, NoticeRow
from services.platform.database import utcnow


def delivery_event(kind: EventType, notice: NoticeRow, recipient: str, actor: str) -> Event:
    return Event(
        event_id=fact_id(kind, notice.notice_id, recipient),
        type=kind,
        occurred_at=utcnow(),
        actor=actor,
        agency=recipient,
        notice_id=uuid.UUID(notice.notice_id),
        case_ref=notice.case_ref,
        envelope_sha256=notice.envelope_sha256,
    )


def fetched_events(rows: Sequence[tuple[Delivery, NoticeRow]], agency: str) -> list[Event]:
    """A fetch of each copy not fetched before."""
    return [
        delivery_event(EventType.notice_fetched, n, agency, agency) for d, n in rows if d.state == "delivered"
    ]
