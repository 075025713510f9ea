"""Delivery routes: an agency pulls its own inbox (paged, long-polled or streamed) and acknowledges with a
receipt; registers webhooks for its deliveries, sees what they parked and replays it; the desk's alerts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sse_starlette import EventSourceResponse, ServerSentEvent

from schemas.api import AckIn, Acknowledgement, Alert, InboxPage, Problem
from schemas.notices import CaseRef, NoticeType, Priority
from services.delivery import service, webhooks
from services.delivery.deadlines import desk_alerts, escalated_since
from services.delivery.errors import DeliveryError
from services.delivery.notify import InboxNotifier
from services.delivery.service import InboxFilter, decode_cursor
from services.delivery.webhooks import ParkedDelivery, WebhookEvent, WebhookIn, WebhookOut, WebhookSender
from services.platform.database import utcnow
from services.platform.views import ERRORS, Config, Publisher, Session
from services.trust.views import Agency, Directory, DirectoryKey, Fresh

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


async def notifier(request: Request) -> InboxNotifier:
    value: InboxNotifier = request.app.state.notifier
    return value


Filter = Annotated[InboxFilter, Depends(inbox_filter)]
Notifier = Annotated[InboxNotifier, Depends(notifier)]

# ---- the inbox -----------------------------------------------------------------------------------------

router = APIRouter(prefix="/v1/inbox", tags=["inbox"], responses=ERRORS)


@router.get(
    "",
    summary="The caller's notices in delivery order; `wait` long-polls (agency credential).",
)
async def get_inbox(
    principal: Agency,
    session: Session,
    publisher: Publisher,
    config: Config,
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
    after_seq = decode_cursor(after) if after else 0
    deadline = asyncio.get_running_loop().time() + wait
    while True:
        version = notify.version(principal.agency)
        items = await service.take(
            session, publisher, principal.agency, after_seq, limit, only, config.inbox_page_bytes
        )
        await session.commit()
        left = deadline - asyncio.get_running_loop().time()
        if items or left <= 0 or notify.draining:
            return InboxPage(items=items, next_cursor=items[-1].cursor if items else after)
        await notify.wait(principal.agency, version, left)


@router.get(
    "/stream",
    response_class=EventSourceResponse,
    summary="Server-Sent Events as notices are delivered; resumes from Last-Event-ID (agency credential).",
)
async def stream_inbox(
    request: Request,
    principal: Agency,
    publisher: Publisher,
    config: Config,
    notify: Notifier,
    only: Filter,
    after: Annotated[str | None, Query(description="Start after this cursor (Last-Event-ID wins).")] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> EventSourceResponse:
    assert principal.agency is not None
    agency = principal.agency
    resume = last_event_id or after
    start = decode_cursor(resume) if resume else 0  # refused here, before the stream answers 200
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions

    async def events() -> AsyncIterator[ServerSentEvent]:
        # The event id is the cursor: a client that reconnects with Last-Event-ID misses and repeats nothing.
        position = start
        escalations_since = utcnow()
        while not notify.draining and not await request.is_disconnected():
            version = notify.version(agency)
            async with sessions() as session:
                items = await service.take(
                    session, publisher, agency, position, 100, only, config.inbox_page_bytes
                )
                await session.commit()
                overdue = await escalated_since(session, agency, escalations_since)
            for item in items:
                yield ServerSentEvent(
                    data=item.model_dump_json(), event=WebhookEvent.notice.value, id=item.cursor
                )
                position = decode_cursor(item.cursor)
            for alert in overdue:
                # A reminder, not a delivery: no id, so it never moves the client's resume point.
                yield ServerSentEvent(data=alert.model_dump_json(), event=WebhookEvent.escalation.value)
                escalations_since = max(escalations_since, alert.since)
            if not items:
                await notify.wait(agency, version, KEEPALIVE_S)

    return EventSourceResponse(events(), ping=KEEPALIVE_S)


@router.post(
    "/{notice_id}/ack",
    summary="Acknowledge a notice with a receipt signed by the caller's key (agency credential).",
)
async def post_ack(
    notice_id: UUID,
    body: AckIn,
    principal: Agency,
    session: Session,
    publisher: Publisher,
    directory: Directory,
    freshness: Fresh,
) -> Acknowledgement:
    assert principal.agency is not None
    result = await service.acknowledge_notice(
        session, publisher, directory, principal.agency, str(notice_id), body.receipt, freshness
    )
    await session.commit()
    return result


# ---- the desk's alerts ---------------------------------------------------------------------------------

alerts = APIRouter(prefix="/v1/alerts", tags=["notices"], responses=ERRORS)


@alerts.get(
    "",
    summary="Overdue notices and parked webhook deliveries (the desk's credential).",
)
async def get_alerts(principal: Agency, session: Session) -> list[Alert]:
    assert principal.agency is not None
    return await desk_alerts(session, principal.agency)


# ---- webhooks ------------------------------------------------------------------------------------------

hooks = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], responses=ERRORS)
SOURCE = "deskbridge/gateway"
REPLAY_ERRORS: dict[int | str, dict[str, object]] = {410: {"model": Problem}, 502: {"model": Problem}}
# Webhooks and parked deliveries are named by uuid4().hex; anything else names none of them.
RowId = Annotated[str, Path(pattern="^[0-9a-f]{32}$")]


@hooks.post(
    "",
    status_code=201,
    summary="Register an endpoint that receives the caller's deliveries as signed POSTs (agency credential).",
    description="The URL must be https:// and its host public: an IP literal or a name that resolves to a "
    "loopback, private, link-local or other non-public address is refused with 422 saying which kind.",
)
async def post_webhook(spec: WebhookIn, principal: Agency, session: Session, config: Config) -> WebhookOut:
    assert principal.agency is not None
    hook = await webhooks.create_webhook(
        session, principal.agency, spec, config.webhook_allow_http, config.webhook_allow_private
    )
    await session.commit()
    return webhooks.webhook_out(hook)


@hooks.get(
    "",
    summary="The caller's webhooks with their position and retry state (agency credential).",
)
async def get_webhooks(principal: Agency, session: Session) -> list[WebhookOut]:
    assert principal.agency is not None
    return [webhooks.webhook_out(h) for h in await webhooks.agency_webhooks(session, principal.agency)]


@hooks.get(
    "/parked",
    summary="Deliveries the caller's webhooks gave up on, oldest first (agency credential).",
)
async def get_parked(principal: Agency, session: Session) -> list[ParkedDelivery]:
    assert principal.agency is not None
    return [webhooks.parked_out(p) for p in await webhooks.agency_parked(session, principal.agency)]


@hooks.post(
    "/parked/{parked_id}/replay",
    responses=REPLAY_ERRORS,
    summary="POST a parked delivery to its webhook again now; 502 if the endpoint fails (agency credential).",
)
async def post_replay(
    parked_id: RowId,
    principal: Agency,
    session: Session,
    publisher: Publisher,
    config: Config,
    key: DirectoryKey,
) -> ParkedDelivery:
    assert principal.agency is not None
    found = await webhooks.own_parked(session, principal.agency, parked_id)
    if found is None:
        raise DeliveryError("parked_not_found", f"no parked delivery {parked_id} for {principal.agency}")
    parked, hook = found
    async with WebhookSender(key, config.webhook_timeout_s, config.webhook_allow_private) as sender:
        await webhooks.replay(session, publisher, sender, parked, hook, principal.agency, SOURCE)
    return webhooks.parked_out(parked)


@hooks.delete(
    "/{webhook_id}",
    status_code=204,
    response_class=Response,
    summary="Stop a webhook; deliveries stay in the inbox (agency credential).",
)
async def delete_webhook(webhook_id: RowId, principal: Agency, session: Session) -> Response:
    assert principal.agency is not None
    if not await webhooks.stop_webhook(session, principal.agency, webhook_id):
        raise DeliveryError("webhook_not_found", f"no webhook {webhook_id} for {principal.agency}")
    await session.commit()
    return Response(status_code=204)


ROUTERS = (router, alerts, hooks)
