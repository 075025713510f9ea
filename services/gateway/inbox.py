"""Partner routes: pull one's own inbox (paged, long-polled or streamed), acknowledge with a receipt."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sse_starlette import EventSourceResponse, ServerSentEvent

from schemas.api import AckIn, Acknowledgement, InboxItem, InboxPage
from schemas.events import EventType
from schemas.notices import CaseRef, NoticeType, Priority
from services.common.db import utcnow
from services.common.delivery import (
    InboxFilter,
    acknowledge,
    decode_cursor,
    delivery_event,
    fetched_events,
    inbox,
    inbox_item,
    mark_fetched,
    own_delivery,
)
from services.common.http import Session
from services.common.kafka import EventPublisher
from services.common.lifecycle import escalated_since
from services.common.receipts import check_receipt
from services.gateway.deps import Agency, Fresh, Publisher
from services.gateway.notices import ERRORS
from services.gateway.notify import InboxNotifier

router = APIRouter(prefix="/v1/inbox", tags=["inbox"])
SOURCE = "deskbridge/gateway"
MAX_WAIT_S = 60
KEEPALIVE_S = 15


def inbox_filter(
    type_: Annotated[
        list[NoticeType] | None, Query(alias="type", description="Only these notice types.")
    ] = None,
    priority: Annotated[list[Priority] | None, Query(description="Only these priorities.")] = None,
    case_ref: Annotated[list[CaseRef] | None, Query(description="Only these cases.")] = None,
) -> InboxFilter:
    # Typed like a webhook's filters, so a value no notice can have is refused (422), not searched for.
    return InboxFilter(
        tuple(t.value for t in type_ or ()), tuple(p.value for p in priority or ()), tuple(case_ref or ())
    )


Filter = Annotated[InboxFilter, Depends(inbox_filter)]


def _cursor(value: str | None) -> int:
    try:
        return decode_cursor(value) if value else 0
    except ValueError as exc:
        raise HTTPException(400, f"cursor: {exc}") from exc


def notifier(request: Request) -> InboxNotifier:
    value: InboxNotifier = request.app.state.notifier
    return value


Notifier = Annotated[InboxNotifier, Depends(notifier)]


async def _take(
    session: AsyncSession, publisher: EventPublisher, agency: str, after: int, limit: int, only: InboxFilter
) -> list[InboxItem]:
    """One page, marked fetched; the audit trail learns of each fetch before the state changes."""
    rows = await inbox(session, agency, after, limit, only)
    await publisher.publish_many(fetched_events(rows, agency), SOURCE)
    await mark_fetched(session, rows)
    await session.commit()
    return [inbox_item(d, n) for d, n in rows]


@router.get(
    "",
    response_model=InboxPage,
    responses=ERRORS,
    summary="The caller's notices in delivery order; `wait` long-polls (agency credential).",
)
async def get_inbox(
    principal: Agency,
    session: Session,
    publisher: Publisher,
    notify: Notifier,
    only: Filter,
    after: Annotated[str | None, Query(description="Opaque cursor from a previous page.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    wait: Annotated[
        float,
        Query(ge=0, le=MAX_WAIT_S, description="Seconds to wait for a first notice when none is there."),
    ] = 0,
) -> InboxPage:
    assert principal.agency is not None
    after_seq = _cursor(after)
    deadline = asyncio.get_running_loop().time() + wait
    while True:
        version = notify.version(principal.agency)
        items = await _take(session, publisher, principal.agency, after_seq, limit, only)
        left = deadline - asyncio.get_running_loop().time()
        if items or left <= 0 or notify.draining:
            return InboxPage(items=items, next_cursor=items[-1].cursor if items else after)
        await notify.wait(principal.agency, version, left)


@router.get(
    "/stream",
    responses=ERRORS,
    response_class=EventSourceResponse,
    summary="Server-Sent Events as notices are delivered; resumes from Last-Event-ID (agency credential).",
)
async def stream_inbox(
    request: Request,
    principal: Agency,
    publisher: Publisher,
    notify: Notifier,
    only: Filter,
    after: Annotated[str | None, Query(description="Start after this cursor (Last-Event-ID wins).")] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> EventSourceResponse:
    assert principal.agency is not None
    agency = principal.agency
    start = _cursor(last_event_id or after)
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions

    async def events() -> AsyncIterator[ServerSentEvent]:
        # The event id is the cursor: a client that reconnects with Last-Event-ID misses and repeats nothing.
        position = start
        escalations_since = utcnow()
        while not notify.draining and not await request.is_disconnected():
            version = notify.version(agency)
            async with sessions() as session:
                items = await _take(session, publisher, agency, position, 100, only)
                overdue = await escalated_since(session, agency, escalations_since)
            for item in items:
                yield ServerSentEvent(data=item.model_dump_json(), event="notice", id=item.cursor)
                position = decode_cursor(item.cursor)
            for alert in overdue:
                # A reminder, not a delivery: no id, so it never moves the client's resume point.
                yield ServerSentEvent(data=alert.model_dump_json(), event="escalation")
                escalations_since = max(escalations_since, alert.since)
            if not items:
                await notify.wait(agency, version, KEEPALIVE_S)

    return EventSourceResponse(events(), ping=KEEPALIVE_S)


@router.post(
    "/{notice_id}/ack",
    response_model=Acknowledgement,
    responses=ERRORS,
    summary="Acknowledge a notice with a receipt signed by the caller's key (agency credential).",
)
async def post_ack(
    notice_id: UUID, body: AckIn, principal: Agency, session: Session, publisher: Publisher, freshness: Fresh
) -> Acknowledgement:
    assert principal.agency is not None
    found = await own_delivery(session, principal.agency, str(notice_id))
    if found is None:
        raise HTTPException(404, f"no notice {notice_id} in the inbox of {principal.agency}")
    delivery, notice = found
    if delivery.recalled_at is not None:
        raise HTTPException(410, f"notice {notice_id} was recalled by its sender")
    now = utcnow()
    if notice.expires_at is not None and notice.expires_at <= now:
        raise HTTPException(410, f"notice {notice_id} expired at {notice.expires_at.isoformat()}")
    if delivery.state == "acknowledged":
        return await acknowledge(session, delivery, body.receipt)  # the first receipt stands
    await check_receipt(
        session, body.receipt, principal.agency, str(notice_id), notice.envelope_sha256, now, freshness
    )
    event = delivery_event(EventType.notice_acknowledged, notice, principal.agency, principal.agency)
    receipt_hash = hashlib.sha256(body.receipt.encode()).hexdigest()
    await publisher.publish(event.model_copy(update={"details": {"receipt_sha256": receipt_hash}}), SOURCE)
    result = await acknowledge(session, delivery, body.receipt)
    await session.commit()
    return result
