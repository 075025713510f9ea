"""Webhook routes: an agency registers endpoints for its own deliveries, sees what they parked, replays it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response
from joserfc.jwk import OKPKey

from schemas.api import Problem
from services.common.http import Session
from services.common.settings import Settings
from services.common.webhooks import (
    ParkedDelivery,
    WebhookError,
    WebhookIn,
    WebhookOut,
    WebhookSender,
    agency_parked,
    agency_webhooks,
    create_webhook,
    own_parked,
    parked_out,
    replay,
    stop_webhook,
    webhook_out,
)
from services.gateway.deps import Agency, Publisher, settings
from services.gateway.notices import ERRORS

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
SOURCE = "deskbridge/gateway"
REPLAY_ERRORS: dict[int | str, dict[str, object]] = {
    **ERRORS,
    410: {"model": Problem},
    502: {"model": Problem},
}
Config = Annotated[Settings, Depends(settings)]


def directory_key(request: Request) -> OKPKey:
    key: OKPKey | None = request.app.state.directory_key
    if key is None:
        raise HTTPException(503, "the directory key is not on this gateway; webhooks cannot be signed")
    return key


DirectoryKey = Annotated[OKPKey, Depends(directory_key)]
# Webhooks and parked deliveries are named by uuid4().hex; anything else names none of them.
RowId = Annotated[str, Path(pattern="^[0-9a-f]{32}$")]


@router.post(
    "",
    status_code=201,
    response_model=WebhookOut,
    responses=ERRORS,
    summary="Register an endpoint that receives the caller's deliveries as signed POSTs (agency credential).",
    description="The URL must be https:// and its host public: an IP literal or a name that resolves to a "
    "loopback, private, link-local or other non-public address is refused with 422 saying which kind.",
)
async def post_webhook(spec: WebhookIn, principal: Agency, session: Session, config: Config) -> WebhookOut:
    assert principal.agency is not None
    try:
        hook = await create_webhook(
            session, principal.agency, spec, config.webhook_allow_http, config.webhook_allow_private
        )
    except WebhookError as exc:
        raise HTTPException(exc.status, exc.detail) from exc
    await session.commit()
    return webhook_out(hook)


@router.get(
    "",
    response_model=list[WebhookOut],
    responses=ERRORS,
    summary="The caller's webhooks with their position and retry state (agency credential).",
)
async def get_webhooks(principal: Agency, session: Session) -> list[WebhookOut]:
    assert principal.agency is not None
    return [webhook_out(h) for h in await agency_webhooks(session, principal.agency)]


@router.get(
    "/parked",
    response_model=list[ParkedDelivery],
    responses=ERRORS,
    summary="Deliveries the caller's webhooks gave up on, oldest first (agency credential).",
)
async def get_parked(principal: Agency, session: Session) -> list[ParkedDelivery]:
    assert principal.agency is not None
    return [parked_out(p) for p in await agency_parked(session, principal.agency)]


@router.post(
    "/parked/{parked_id}/replay",
    response_model=ParkedDelivery,
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
    found = await own_parked(session, principal.agency, parked_id)
    if found is None:
        raise HTTPException(404, f"no parked delivery {parked_id} for {principal.agency}")
    parked, hook = found
    try:
        async with WebhookSender(key, config.webhook_timeout_s, config.webhook_allow_private) as sender:
            await replay(session, publisher, sender, parked, hook, principal.agency, SOURCE)
    except WebhookError as exc:
        raise HTTPException(exc.status, exc.detail) from exc
    return parked_out(parked)


@router.delete(
    "/{webhook_id}",
    status_code=204,
    response_class=Response,
    responses=ERRORS,
    summary="Stop a webhook; deliveries stay in the inbox (agency credential).",
)
async def delete_webhook(webhook_id: RowId, principal: Agency, session: Session) -> Response:
    assert principal.agency is not None
    if not await stop_webhook(session, principal.agency, webhook_id):
        raise HTTPException(404, f"no webhook {webhook_id} for {principal.agency}")
    await session.commit()
    return Response(status_code=204)
