"""The audit API: the log's entries for auditors, and its Merkle tree, signed checkpoints and proofs for
auditors and partner agencies (who also cosign checkpoints as witnesses), and the same log as C2SP
tlog-tiles under /tlog. Never any notice content."""

from __future__ import annotations

import gzip
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import PlainTextResponse, Response

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
from services.transparency import checkpoints, service, storage, tiles
from services.transparency.checkpoints import Publisher
from services.transparency.service import MAX_PAGE, EventFilter
from services.transparency.storage import TreeError, TreeMemory
from services.trust.service import Principal
from services.trust.views import require

log = structlog.get_logger("audit")
router = APIRouter(prefix="/v1/audit", tags=["audit"], responses=ERRORS)
# The same log read as C2SP tlog-tiles (https://c2sp.org/tlog-tiles), so any tlog-tiles client can check it.
tlog = APIRouter(prefix="/tlog", tags=["tlog-tiles"], responses=ERRORS)
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


def _tree(request: Request) -> TreeMemory:
    """What the app's process knows of the tree, which its proofs are served from (services/audit/app.py)."""
    memory: TreeMemory = request.app.state.tree
    return memory


Auditor = Annotated[Principal, Depends(_audited("auditor"))]
Reader = Annotated[Principal, Depends(_audited("auditor", "agency"))]
Witness = Annotated[Principal, Depends(require("agency"))]
Checkpoints = Annotated[Publisher, Depends(_checkpoints)]
Tree = Annotated[TreeMemory, Depends(_tree)]


def _note(text: str) -> PlainTextResponse:
    return PlainTextResponse(text, media_type="text/plain; charset=utf-8")


# Authenticated, so no shared cache keeps them; a tile's bytes at a path never change.
IMMUTABLE = "private, max-age=31536000, immutable"
TILE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/octet-stream": {}}, "description": "A tile or entry bundle."}
}


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
    _: Reader, session: Session, tree: Tree, index: Count, size: Annotated[Count, Query(ge=1)]
) -> InclusionProof:
    proof = await storage.inclusion(session, index, size, tree)
    return InclusionProof(index=index, size=size, proof=[p.hex() for p in proof])


@router.get(
    "/proof/consistency",
    summary="The consistency proof between two tree sizes (auditor or agency credential).",
)
async def get_consistency(
    _: Reader,
    session: Session,
    tree: Tree,
    old: Annotated[Count, Query(alias="from")],
    new: Annotated[Count, Query(alias="to")],
) -> ConsistencyProof:
    proof = await storage.consistency(session, old, new, tree)
    return ConsistencyProof(from_size=old, to_size=new, proof=[p.hex() for p in proof])


@router.get(
    "/export",
    summary="Leaves [start, end) with a checkpoint and every proof, for offline checks (auditor credential).",
)
async def export(
    _: Auditor,
    session: Session,
    tree: Tree,
    start: Count,
    end: Count,
    old: Annotated[
        int | None,
        Query(alias="from", ge=0, le=BIGINT_MAX, description="Also prove consistency from this size."),
    ] = None,
) -> AuditBundle:
    return await checkpoints.export_bundle(session, start, end, old, tree)


# ---- C2SP tlog-tiles ------------------------------------------------------------------------------------


@tlog.get(
    "/checkpoint",
    response_class=PlainTextResponse,
    responses=NOTE,
    summary="tlog-tiles: the latest signed checkpoint with its cosignatures (auditor or agency credential).",
)
async def get_tlog_checkpoint(reader: Reader, session: Session) -> PlainTextResponse:
    response = await get_latest_checkpoint(reader, session)
    response.headers["Cache-Control"] = "private, max-age=5"  # mutable: a few seconds at most
    return response


def _index(path: str) -> tuple[int, int]:
    parsed = tiles.parse_index(path)
    if parsed is None:
        raise TreeError(f"{path} is not a tile index as tlog-tiles spells it", "tile_not_found")
    return parsed


@tlog.get(
    "/tile/entries/{path:path}",
    response_class=Response,
    responses=TILE,
    summary="tlog-tiles: entry bundle <N>[.p/<W>], the leaves' data (auditor credential).",
)
async def get_entry_bundle(_: Auditor, session: Session, request: Request, path: str) -> Response:
    index, width = _index(path)
    bundle = await service.entry_bundle(session, index, width)
    headers = {"Cache-Control": IMMUTABLE}
    if "gzip" in request.headers.get("accept-encoding", ""):
        bundle, headers["Content-Encoding"] = gzip.compress(bundle), "gzip"
    return Response(bundle, media_type="application/octet-stream", headers=headers)


@tlog.get(
    "/tile/{level}/{path:path}",
    response_class=Response,
    responses=TILE,
    summary="tlog-tiles: Merkle tree tile <L>/<N>[.p/<W>], hashes only (auditor or agency credential).",
)
async def get_tile(_: Reader, session: Session, level: str, path: str) -> Response:
    tile_level = tiles.parse_level(level)
    if tile_level is None:
        raise TreeError(f"{level} is not a tile level (0 to 63)", "tile_not_found")
    index, width = _index(path)
    hashes = await storage.tile(session, tile_level, index, width)
    return Response(hashes, media_type="application/octet-stream", headers={"Cache-Control": IMMUTABLE})
