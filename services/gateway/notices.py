"""Desk routes: submit a notice, follow its delivery."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, HTTPException, Request, Response

from schemas.api import CaseThread, NoticeAccepted, NoticeStatus, Problem, RecallAccepted, RecallIn
from schemas.envelopes import FlattenedJws
from schemas.notices import NoticeDraft
from services.common.cases import case_thread
from services.common.db import NoticeRow, Submission, utcnow
from services.common.delivery import notice_status
from services.common.http import Directory, Session
from services.common.kafka import cloud_headers
from services.common.lifecycle import RECALL_TYPE, RecallRequest
from services.gateway.deps import Agency, DeskKeys, Fresh, Publisher
from services.gateway.limits import LimitedAgency, Room
from services.gateway.submit import Intake, accept_envelope, seal_for_desk

router = APIRouter(prefix="/v1/notices", tags=["notices"])
envelopes = APIRouter(prefix="/v1/envelopes", tags=["notices"])
cases = APIRouter(prefix="/v1/cases", tags=["notices"])
ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": Problem} for code in (400, 401, 403, 404, 409, 413, 422, 503)
}


async def intake(
    session: Session, directory: Directory, publisher: Publisher, freshness: Fresh, room: Room
) -> Intake:
    """What admitting a submission needs, for both ways in (async: a plain def would run in a thread)."""
    return Intake(session, directory, publisher, freshness, room)


Intakes = Annotated[Intake, Depends(intake)]


@router.post(
    "",
    status_code=202,
    response_model=NoticeAccepted,
    responses=ERRORS,
    summary="Seal a notice with the desk's keys and make it durable in Kafka (desk credential).",
)
async def post_notice(
    draft: NoticeDraft, principal: LimitedAgency, intake: Intakes, desk: DeskKeys, response: Response
) -> NoticeAccepted:
    if principal.agency != desk.agency:
        raise HTTPException(403, "only the desk's credential may have the gateway seal notices")
    submission = await seal_for_desk(intake, desk, draft)
    return _accepted(submission, response)


SEALED_BODY = {
    "requestBody": {
        "required": True,
        "description": "The sealed envelope (docs/envelope.md): an outer JWS, flattened JSON serialization.",
        "content": {"application/json": {"schema": FlattenedJws.model_json_schema()}},
    }
}


@envelopes.post(
    "",
    status_code=202,
    response_model=NoticeAccepted,
    responses=ERRORS,
    openapi_extra=SEALED_BODY,
    summary="Carry an envelope its sender sealed on its own machine (the sender's agency credential).",
)
async def post_envelope(
    request: Request, principal: LimitedAgency, intake: Intakes, response: Response
) -> NoticeAccepted:
    assert principal.agency is not None
    # The bytes as sent are what was signed and what is hashed and carried: no re-serialising.
    raw = await request.body()
    submission = await accept_envelope(intake, raw, principal.agency)
    return _accepted(submission, response)


def _accepted(submission: Submission, response: Response) -> NoticeAccepted:
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


@router.post(
    "/{notice_id}/recall",
    status_code=202,
    response_model=RecallAccepted,
    responses=ERRORS,
    summary="Withdraw a notice: unread copies vanish, read ones are marked (its sender's credential).",
)
async def post_recall(
    notice_id: UUID, principal: Agency, session: Session, publisher: Publisher, body: RecallIn | None = None
) -> RecallAccepted:
    assert principal.agency is not None
    submission = await session.get(Submission, str(notice_id))
    if submission is None or submission.sender != principal.agency:
        raise HTTPException(404, f"no notice {notice_id} sent by {principal.agency}")
    notice = await session.get(NoticeRow, str(notice_id))
    if notice is not None and notice.recalled_at is not None:
        raise HTTPException(409, f"notice {notice_id} was already recalled")
    request = RecallRequest(
        notice_id=notice_id,
        case_ref=submission.case_ref,
        sender=submission.sender,
        requested_by=principal.agency,
        requested_at=utcnow(),
        reason=body.reason if body is not None else None,
    )
    # Keyed by case like the notice itself, so ingest always meets the notice before its recall.
    await publisher.send(
        publisher.topics.notices,
        submission.case_ref,
        request.model_dump_json().encode(),
        cloud_headers(RECALL_TYPE, f"recall:{notice_id}", f"deskbridge/gateway/{principal.agency}"),
    )
    return RecallAccepted(notice_id=notice_id)


@cases.get(
    "/{case_ref}",
    response_model=CaseThread,
    responses=ERRORS,
    summary="A case's notices and replies as a thread, as far as the caller took part (agency credential).",
)
async def get_case(case_ref: str, principal: Agency, session: Session) -> CaseThread:
    assert principal.agency is not None
    thread = await case_thread(session, case_ref, principal.agency)
    if thread is None:
        raise HTTPException(404, f"no notice of case {case_ref} that {principal.agency} sent or received")
    return thread
