"""Desk routes: submit a notice, follow its delivery."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, HTTPException, Response

from schemas.api import NoticeAccepted, NoticeStatus, Problem
from schemas.notices import NoticeDraft
from services.common.delivery import notice_status
from services.common.http import Session
from services.gateway.deps import Agency, DeskKeys, Publisher
from services.gateway.submit import submit_notice

router = APIRouter(prefix="/v1/notices", tags=["notices"])
ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": Problem} for code in (400, 401, 403, 404, 409, 413, 422, 503)
}


@router.post(
    "",
    status_code=202,
    response_model=NoticeAccepted,
    responses=ERRORS,
    summary="Seal a notice with the desk's keys and make it durable in Kafka (desk credential).",
)
async def post_notice(
    draft: NoticeDraft,
    principal: Agency,
    session: Session,
    publisher: Publisher,
    desk: DeskKeys,
    response: Response,
) -> NoticeAccepted:
    if principal.agency != desk.agency:
        raise HTTPException(403, "only the desk's credential may have the gateway seal notices")
    submission = await submit_notice(session, publisher, desk, draft)
    response.headers["Location"] = f"/v1/notices/{submission.notice_id}"
    return NoticeAccepted(
        notice_id=UUID(submission.notice_id),
        envelope_sha256=submission.envelope_sha256,
        status_url=f"/v1/notices/{submission.notice_id}",
    )


@router.get(
    "/{notice_id}",
    response_model=NoticeStatus,
    responses=ERRORS,
    summary="Per-recipient delivery state of a notice (its sender's credential).",
)
async def get_notice(notice_id: UUID, principal: Agency, session: Session) -> NoticeStatus:
    assert principal.agency is not None
    status = await notice_status(session, principal.agency, str(notice_id))
    if status is None:
        raise HTTPException(404, f"no notice {notice_id} sent by {principal.agency}")
    return status
