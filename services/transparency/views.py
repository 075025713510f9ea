"""The audit API: the log's entries for auditors, and its Merkle tree, signed checkpoints and proofs for
auditors and partner agencies (who also cosign checkpoints as witnesses). Never any notice content."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import PlainTextResponse

from schemas.api import BIGINT_MAX, NO_NUL
from schemas.audit import (
    AuditBundle,
    AuditPage,
    CheckpointPage,
    ConsistencyProof,
    CosignatureIn,
    InclusionProof,
    LeafPage,
    NodePage,
)
from schemas.notices import UtcDatetime
from services.platform.views import ERRORS, Session
from services.transparency import checkpoints, service, storage
from services.transparency.checkpoints import Publisher
from services.transparency.service import MAX_PAGE, EventFilter
from services.trust.service import Principal
from services.trust.views import require

log = structlog.get_logger("audit")
router = APIRouter(prefix="/v1/audit", tags=["audit"], responses=ERRORS)
NOTE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/plain": {}}, "description": "A signed note (C2SP tlog-checkpoint)."}
}
# Sequence numbers, tree sizes and indexes: beyond bigint there is nothing stored, and nothing to look up.
Count = Annotated[int, Query(ge=0, le=BIGINT_MAX)]
Size = Annotated[int, Path(ge=0, le=BIGINT_MAX)]
Filter = Annotated[str | None, Query(max_length=200, pattern=NO_NUL)]


def _checkpoints(request: Request) -> Publisher:
    publisher: Publisher = request.app.state.checkpoints
    return publisher


def _audited(*roles: str) -> Callable[..., Awaitable[Principal]]:
    """Authenticates like `require`, and tallies the read for the auditor.query entries."""
    authenticated = require(*roles)

    # The dependency is a closure, which a string annotation could not name: a default instead.
    async def dependency(request: Request, caller: Principal = Depends(authenticated)) -> Principal:  # noqa: B008
        route = getattr(request.scope.get("route"), "path", request.url.path)
        _checkpoints(request).queries.record(caller, route)
        return caller

    return dependency


Auditor = Annotated[Principal, Depends(_audited("auditor"))]
Reader = Annotated[Principal, Depends(_audited("auditor", "agency"))]
Witness = Annotated[Principal, Depends(require("agency"))]
Checkpoints = Annotated[Publisher, Depends(_checkpoints)]


def _note(text: str) -> PlainTextResponse:
    return PlainTextResponse(text, media_type="text/plain; charset=utf-8")


@router.get("/events", summary="Entries, filtered (auditor credential).")
async def get_events(
    _: Auditor,
    session: Session,
    after: Annotated[Count, Query(description="Return entries with seq greater than this.")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 500,
    agency: Filter = None,
    notice_id: Filter = None,
    case_ref: Filter = None,
    event_type: Annotated[Filter, Query(alias="type")] = None,
    since: Annotated[UtcDatetime | None, Query(description="Events that occurred at or after this.")] = None,
    until: Annotated[UtcDatetime | None, Query(description="Events that occurred before this.")] = None,
) -> AuditPage:
    only = EventFilter(agency, notice_id, case_ref, event_type, since, until)
    return await service.events_page(session, after, limit, only)


@router.get(
    "/checkpoint",
    response_class=PlainTextResponse,
    responses=NOTE,
    summary="The latest signed checkpoint with its cosignatures (auditor or agency credential).",
)
async def get_latest_checkpoint(_: Reader, session: Session) -> PlainTextResponse:
    return _note(await checkpoints.published(session, await checkpoints.checkpoint_row(session)))


@router.get(
    "/checkpoints/{size}",
    response_class=PlainTextResponse,
    responses=NOTE,
    summary="The signed checkpoint of this tree size with its cosignatures (auditor or agency credential).",
)
async def get_checkpoint(_: Reader, session: Session, size: Size) -> PlainTextResponse:
    return _note(await checkpoints.published(session, await checkpoints.checkpoint_row(session, size)))


@router.get(
    "/checkpoints",
    summary="Every checkpoint published, oldest first (auditor credential).",
)
async def list_checkpoints(
    _: Auditor,
    session: Session,
    after: Annotated[Count, Query(description="Checkpoints of a size greater than this.")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 500,
) -> CheckpointPage:
    return await checkpoints.checkpoints_page(session, after, limit)


@router.post(
    "/checkpoints",
    response_class=PlainTextResponse,
    responses=NOTE,
    summary="Sign a checkpoint now if the log grew; returns the latest (auditor credential).",
)
async def post_checkpoint(_: Auditor, publisher: Checkpoints) -> PlainTextResponse:
    await publisher.publish()
    async with publisher.sessions() as session:
        return _note(await checkpoints.published(session, await checkpoints.checkpoint_row(session)))


@router.post(
    "/checkpoints/{size}/cosignatures",
    status_code=201,
    summary="A witness agency cosigns a checkpoint it checked (agency credential or signature).",
)
async def post_cosignature(
    caller: Witness, session: Session, publisher: Checkpoints, size: Size, body: CosignatureIn
) -> dict[str, Any]:
    assert caller.agency is not None
    await checkpoints.cosign(session, caller.agency, size, body.line, publisher.log_verifier())
    await session.commit()
    log.info("checkpoint cosigned", size=size, witness=caller.agency)
    return {"size": size, "witness": caller.agency}


@router.get(
    "/leaves",
    summary="Leaves [start, end) with their stored leaf hashes (auditor credential).",
)
async def get_leaves(_: Auditor, session: Session, start: Count, end: Count) -> LeafPage:
    return await service.leaves_page(session, start, end)


@router.get(
    "/nodes",
    summary="Stored complete-subtree hashes of one level, by index range (auditor credential).",
)
async def get_nodes(
    _: Auditor,
    session: Session,
    level: Annotated[int, Query(ge=0, le=63)],
    start: Count,
    end: Count,
) -> NodePage:
    return await service.nodes_page(session, level, start, end)


@router.get(
    "/proof/inclusion",
    summary="The inclusion proof of leaf `index` in the tree of `size` (auditor or agency credential).",
)
async def get_inclusion(
    _: Reader, session: Session, index: Count, size: Annotated[Count, Query(ge=1)]
) -> InclusionProof:
    proof = await storage.inclusion(session, index, size)
    return InclusionProof(index=index, size=size, proof=[p.hex() for p in proof])


@router.get(
    "/proof/consistency",
    summary="The consistency proof between two tree sizes (auditor or agency credential).",
)
async def get_consistency(
    _: Reader,
    session: Session,
    old: Annotated[Count, Query(alias="from")],
    new: Annotated[Count, Query(alias="to")],
) -> ConsistencyProof:
    proof = await storage.consistency(session, old, new)
    return ConsistencyProof(from_size=old, to_size=new, proof=[p.hex() for p in proof])


@router.get(
    "/export",
    summary="Leaves [start, end) with a checkpoint and every proof, for offline checks (auditor credential).",
)
async def export(
    _: Auditor,
    session: Session,
    start: Count,
    end: Count,
    old: Annotated[
        int | None,
        Query(alias="from", ge=0, le=BIGINT_MAX, description="Also prove consistency from this size."),
    ] = None,
) -> AuditBundle:
    return await checkpoints.export_bundle(session, start, end, old)
