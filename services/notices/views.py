"""Notice routes: the desk submits (sealed here) and any agency carries what it sealed itself, follows its
notices' delivery (one or the list of them), recalls one, and reads its cases as threads; the
administrator erases one."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Query, Request, Response

from schemas.api import (
    CaseThread,
    ErasureIn,
    NoticeAccepted,
    NoticeStatus,
    RecallAccepted,
    RecallIn,
    SentPage,
)
from schemas.envelopes import FlattenedJws
from schemas.notices import NoticeDraft
from services.envelope.errors import EnvelopeError, KeyFileError
from services.envelope.keys import AgencyKeys, DeskKeyFile
from services.metrics.registry import Metrics
from services.notices import service
from services.notices.cases import case_thread
from services.notices.errors import NoticeError
from services.notices.limits import TokenBuckets
from services.notices.models import Submission
from services.platform.errors import Unavailable
from services.platform.kafka import commit_audited
from services.platform.views import ERRORS, Publisher, Session, etagged
from services.trust.service import Principal
from services.trust.views import (
    Admin,
    Agency,
    Bearer,
    authenticate,
    directory_view,
    freshness_of,
)

router = APIRouter(prefix="/v1/notices", tags=["notices"], responses=ERRORS)
envelopes = APIRouter(prefix="/v1/envelopes", tags=["notices"], responses=ERRORS)
cases = APIRouter(prefix="/v1/cases", tags=["notices"], responses=ERRORS)
admin = APIRouter(prefix="/v1/admin", tags=["admin"], responses=ERRORS)


async def desk_keys(request: Request) -> AgencyKeys:
    keys: DeskKeyFile = request.app.state.desk_keys
    try:
        return keys.current()
    except KeyFileError as exc:
        raise Unavailable(f"the desk's signing keys: {exc.detail}", "desk_keys_unavailable") from exc


@dataclass(frozen=True)
class Submitter:
    """The agency submitting, once its token bucket admitted one more submission, with what admitting it
    needs and the meters that count it."""

    principal: Principal
    intake: service.Intake
    metrics: Metrics


async def submitter(request: Request, credentials: Bearer) -> Submitter:
    """One dependency for a submission's every need (async: a plain def would run in a thread). FastAPI
    solves each dependency anew on every request, a shared one too before it finds it cached: as the
    nine dependencies this gathers, they cost some 45 µs more a request (measured), about 3 % of the
    gateway's CPU for a submission."""
    state = request.app.state
    directory = await directory_view(request)
    principal = await authenticate(request, directory, credentials, ("agency",))
    buckets: TokenBuckets = state.buckets
    buckets.admit(principal.name)
    intake = service.Intake(
        state.autocommit, directory, state.publisher, freshness_of(request), state.inbox_room
    )
    return Submitter(principal, intake, state.metrics)


Submitting = Annotated[Submitter, Depends(submitter)]
DeskKeys = Annotated[AgencyKeys, Depends(desk_keys)]


@router.post(
    "",
    status_code=202,
    summary="Seal a notice with the desk's keys and make it durable in Kafka (desk credential).",
)
async def post_notice(
    draft: NoticeDraft, submitter: Submitting, desk: DeskKeys, response: Response
) -> NoticeAccepted:
    if submitter.principal.agency != desk.agency:
        raise NoticeError("not_the_desk", "only the desk's credential may have the gateway seal notices")
    sealing = service.seal_for_desk(submitter.intake, desk, draft)
    submission = await _counted(submitter.metrics, sealing)
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
    openapi_extra=SEALED_BODY,
    summary="Carry an envelope its sender sealed on its own machine (the sender's agency credential).",
)
async def post_envelope(request: Request, submitter: Submitting, response: Response) -> NoticeAccepted:
    sender = submitter.principal.agency
    assert sender is not None
    # The bytes as sent are what was signed and what is hashed and carried: no re-serialising.
    raw = await request.body()
    submission = await _counted(submitter.metrics, service.accept_envelope(submitter.intake, raw, sender))
    return _accepted(submission, response)


async def _counted(metrics: Metrics, submitting: Awaitable[Submission]) -> Submission:
    """A submission counted as accepted, or as refused by the code it was refused with (an outage is
    neither: nothing was decided)."""
    try:
        submission = await submitting
    except (EnvelopeError, NoticeError) as exc:
        metrics.submission_refused(exc.code)
        raise
    metrics.submission_accepted()
    return submission


def _accepted(submission: Submission, response: Response) -> NoticeAccepted:
    response.headers["Location"] = f"/v1/notices/{submission.notice_id}"
    return NoticeAccepted(
        notice_id=UUID(submission.notice_id),
        envelope_sha256=submission.envelope_sha256,
        status_url=f"/v1/notices/{submission.notice_id}",
    )


@router.get(
    "",
    response_model=SentPage,
    responses={304: {"description": "Unchanged since the ETag sent in If-None-Match."}},
    summary="The caller's sent notices, newest first, each with its per-recipient state; poll with "
    "If-None-Match for a bodiless 304 while nothing changed (agency credential).",
)
async def list_notices(
    principal: Agency,
    session: Session,
    after: Annotated[str | None, Query(description="next_cursor of the page before: older notices.")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    if_none_match: Annotated[
        str | None, Header(description="The ETag of the page last seen: 304 if it is still the same.")
    ] = None,
) -> Response:
    assert principal.agency is not None
    return etagged(await service.sent_notices(session, principal.agency, after, limit), if_none_match)


@router.get(
    "/{notice_id}",
    summary="Per-recipient delivery state of a notice (its sender's credential).",
)
async def get_notice(notice_id: UUID, principal: Agency, session: Session) -> NoticeStatus:
    assert principal.agency is not None
    status = await service.notice_status(session, principal.agency, str(notice_id))
    if status is None:
        raise NoticeError("notice_not_found", f"no notice {notice_id} sent by {principal.agency}")
    return status


@router.post(
    "/{notice_id}/recall",
    status_code=202,
    summary="Withdraw a notice: unread copies vanish, read ones are marked (its sender's credential).",
)
async def post_recall(
    notice_id: UUID, principal: Agency, session: Session, publisher: Publisher, body: RecallIn | None = None
) -> RecallAccepted:
    assert principal.agency is not None
    reason = body.reason if body is not None else None
    await service.request_recall(session, publisher, notice_id, principal.agency, reason)
    return RecallAccepted(notice_id=notice_id)


@cases.get(
    "/{case_ref}",
    summary="A case's notices and replies as a thread, as far as the caller took part (agency credential).",
)
async def get_case(case_ref: str, principal: Agency, session: Session) -> CaseThread:
    assert principal.agency is not None
    thread = await case_thread(session, case_ref, principal.agency)
    if thread is None:
        raise NoticeError(
            "case_not_found", f"no notice of case {case_ref} that {principal.agency} sent or received"
        )
    return thread


@admin.post(
    "/notices/{notice_id}/erase",
    summary="Erase a notice's stored envelope (crypto-shredding); audit leaves stay (admin credential).",
)
async def post_erase(
    notice_id: UUID, body: ErasureIn, principal: Admin, session: Session, publisher: Publisher
) -> dict[str, str]:
    event = await service.erase_notice(session, str(notice_id), principal.name, body.reason)
    await commit_audited(session, publisher, [event], "deskbridge/gateway/admin")
    return {"notice_id": str(notice_id), "status": "erased"}


ROUTERS = (router, envelopes, cases, admin)
