"""Partner routes: pull one's own inbox, acknowledge what one has read."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query

from schemas.api import Acknowledgement, InboxPage
from schemas.events import EventType
from services.common.db import utcnow
from services.common.delivery import (
    acknowledge,
    decode_cursor,
    delivery_event,
    encode_cursor,
    fetched_events,
    inbox,
    inbox_item,
    mark_fetched,
    own_delivery,
)
from services.common.http import Session
from services.gateway.deps import Agency, Publisher
from services.gateway.notices import ERRORS

router = APIRouter(prefix="/v1/inbox", tags=["inbox"])
SOURCE = "deskbridge/gateway"


@router.get(
    "",
    response_model=InboxPage,
    responses=ERRORS,
    summary="Notices addressed to the calling agency, in delivery order (agency credential).",
)
async def get_inbox(
    principal: Agency,
    session: Session,
    publisher: Publisher,
    after: Annotated[str | None, Query(description="Opaque cursor from a previous page.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> InboxPage:
    assert principal.agency is not None
    try:
        after_seq = decode_cursor(after) if after else 0
    except ValueError as exc:
        raise HTTPException(400, f"after: {exc}") from exc
    rows = await inbox(session, principal.agency, after_seq, limit)
    # The audit trail learns of the fetch before the state changes, so no fetch goes unrecorded.
    for event in fetched_events(rows, principal.agency):
        await publisher.publish(event, SOURCE)
    await mark_fetched(session, rows)
    await session.commit()
    items = [inbox_item(d, n) for d, n in rows]
    return InboxPage(items=items, next_cursor=encode_cursor(rows[-1][0].seq) if rows else after)


@router.post(
    "/{notice_id}/ack",
    response_model=Acknowledgement,
    responses=ERRORS,
    summary="Acknowledge a notice in the calling agency's inbox (agency credential).",
)
async def post_ack(
    notice_id: UUID, principal: Agency, session: Session, publisher: Publisher
) -> Acknowledgement:
    assert principal.agency is not None
    found = await own_delivery(session, principal.agency, str(notice_id))
    if found is None:
        raise HTTPException(404, f"no notice {notice_id} in the inbox of {principal.agency}")
    delivery, notice = found
    if delivery.recalled_at is not None:
        raise HTTPException(410, f"notice {notice_id} was recalled by its sender")
    if notice.expires_at is not None and notice.expires_at <= utcnow():
        raise HTTPException(410, f"notice {notice_id} expired at {notice.expires_at.isoformat()}")
    if delivery.state != "acknowledged":
        await publisher.publish(
            delivery_event(EventType.notice_acknowledged, notice, principal.agency, principal.agency), SOURCE
        )
    result = await acknowledge(session, delivery)
    await session.commit()
    return result
