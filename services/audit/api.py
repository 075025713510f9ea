"""The audit API: the log's entries for auditors, and its Merkle tree, signed checkpoints and proofs for
auditors and partner agencies (who also cosign checkpoints as witnesses). Never any notice content."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.api import BIGINT_MAX, NO_NUL, Problem
from schemas.audit import (
    AuditBundle,
    AuditLeaf,
    AuditPage,
    CheckpointItem,
    CheckpointPage,
    ConsistencyProof,
    CosignatureIn,
    InclusionProof,
    LeafPage,
    NodePage,
    TreeNode,
)
from services.audit.checkpoints import AuditorQueries, Publisher
from services.common import auditlog, tlog, treehead
from services.common.checkpoint import CosignatureVerifier, NoteError, NoteSigner
from services.common.db import AgencyKey, AuditEntry, TlogCheckpoint, TlogNode, make_engine, make_sessionmaker
from services.common.directory import Principal, key_state
from services.common.http import BodyLimit, Session, install_error_handlers, problem, require
from services.common.keyring import DirectoryCache
from services.common.keys import KeyFileError, import_public
from services.common.settings import Settings
from services.common.tlog import TreeError

log = structlog.get_logger("audit")
router = APIRouter(prefix="/v1/audit", tags=["audit"])
PROBLEMS: dict[int | str, dict[str, Any]] = {code: {"model": Problem} for code in (400, 401, 403, 404, 422)}
NOTE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/plain": {}}, "description": "A signed note (C2SP tlog-checkpoint)."}
}
MAX_PAGE = 1000
# Sequence numbers, tree sizes and indexes: beyond bigint there is nothing stored, and nothing to look up.
Count = Annotated[int, Query(ge=0, le=BIGINT_MAX)]
Size = Annotated[int, Path(ge=0, le=BIGINT_MAX)]
Filter = Annotated[str | None, Query(max_length=200, pattern=NO_NUL)]


def _audited(*roles: str) -> Callable[..., Awaitable[Principal]]:
    """Authenticates like `require`, and tallies the read for the auditor.query entries."""
    authenticated = require(*roles)

    # The dependency is a closure, which a string annotation could not name: a default instead.
    async def dependency(request: Request, caller: Principal = Depends(authenticated)) -> Principal:  # noqa: B008
        route = getattr(request.scope.get("route"), "path", request.url.path)
        request.app.state.publisher.queries.record(caller, route)
        return caller

    return dependency


Auditor = Annotated[Principal, Depends(_audited("auditor"))]
Reader = Annotated[Principal, Depends(_audited("auditor", "agency"))]
Witness = Annotated[Principal, Depends(require("agency"))]


def _publisher(request: Request) -> Publisher:
    publisher: Publisher = request.app.state.publisher
    return publisher


def _note(text: str) -> PlainTextResponse:
    return PlainTextResponse(text, media_type="text/plain; charset=utf-8")


def _utc_text(at: datetime) -> str:
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC).isoformat()


@router.get(
    "/events", response_model=AuditPage, responses=PROBLEMS, summary="Entries, filtered (auditor credential)."
)
async def get_events(
    _: Auditor,
    session: Session,
    after: Annotated[Count, Query(description="Return entries with seq greater than this.")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 500,
    agency: Filter = None,
    notice_id: Filter = None,
    case_ref: Filter = None,
    event_type: Annotated[Filter, Query(alias="type")] = None,
    since: Annotated[datetime | None, Query(description="Events that occurred at or after this.")] = None,
    until: Annotated[datetime | None, Query(description="Events that occurred before this.")] = None,
) -> AuditPage:
    # The head first, then only entries up to it: appends are serialised and seq is contiguous, so all of
    # them are visible and the page can never run past the head it is served with.
    head_seq, head_hash = await auditlog.head(session)
    query = (
        select(AuditEntry)
        .where(AuditEntry.seq > after, AuditEntry.seq <= head_seq)
        .order_by(AuditEntry.seq)
        .limit(limit)
    )
    for column, value in (
        (AuditEntry.agency, agency),
        (AuditEntry.notice_id, notice_id),
        (AuditEntry.case_ref, case_ref),
        (AuditEntry.event_type, event_type),
    ):
        if value is not None:
            query = query.where(column == value)
    # occurred_at is stored as UTC ISO text, which sorts as time does.
    if since is not None:
        query = query.where(AuditEntry.occurred_at >= _utc_text(since))
    if until is not None:
        query = query.where(AuditEntry.occurred_at < _utc_text(until))
    rows = list((await session.execute(query)).scalars())
    return AuditPage(
        entries=[auditlog.to_record(r) for r in rows],
        next_after=rows[-1].seq if len(rows) == limit else None,
        head_seq=head_seq,
        head_hash=head_hash,
    )


async def _checkpoint_row(session: AsyncSession, size: int | None) -> TlogCheckpoint:
    row = await (treehead.latest_checkpoint(session) if size is None else session.get(TlogCheckpoint, size))
    if row is None:
        raise HTTPException(
            404, "no checkpoint has been published yet" if size is None else f"no checkpoint of size {size}"
        )
    return row


@router.get(
    "/checkpoint",
    response_class=PlainTextResponse,
    responses={**NOTE, **PROBLEMS},
    summary="The latest signed checkpoint with its cosignatures (auditor or agency credential).",
)
async def get_latest_checkpoint(_: Reader, session: Session) -> PlainTextResponse:
    return _note(await treehead.published(session, await _checkpoint_row(session, None)))


@router.get(
    "/checkpoints/{size}",
    response_class=PlainTextResponse,
    responses={**NOTE, **PROBLEMS},
    summary="The signed checkpoint of this tree size with its cosignatures (auditor or agency credential).",
)
async def get_checkpoint(_: Reader, session: Session, size: Size) -> PlainTextResponse:
    return _note(await treehead.published(session, await _checkpoint_row(session, size)))


@router.get(
    "/checkpoints",
    response_model=CheckpointPage,
    responses=PROBLEMS,
    summary="Every checkpoint published, oldest first (auditor credential).",
)
async def list_checkpoints(
    _: Auditor,
    session: Session,
    after: Annotated[Count, Query(description="Checkpoints of a size greater than this.")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 500,
) -> CheckpointPage:
    query = (
        select(TlogCheckpoint).where(TlogCheckpoint.size > after).order_by(TlogCheckpoint.size).limit(limit)
    )
    rows = list((await session.execute(query)).scalars())
    return CheckpointPage(
        checkpoints=[CheckpointItem(size=r.size, note=r.note) for r in rows],
        next_after=rows[-1].size if len(rows) == limit else None,
    )


@router.post(
    "/checkpoints",
    response_class=PlainTextResponse,
    responses={**NOTE, **PROBLEMS, 503: {"model": Problem}},
    summary="Sign a checkpoint now if the log grew; returns the latest (auditor credential).",
)
async def post_checkpoint(_: Auditor, request: Request) -> PlainTextResponse:
    publisher = _publisher(request)
    try:
        await publisher.publish()
    except TreeError as exc:
        raise HTTPException(503, str(exc)) from exc
    async with publisher.sessions() as session:
        return _note(await treehead.published(session, await _checkpoint_row(session, None)))


@router.post(
    "/checkpoints/{size}/cosignatures",
    status_code=201,
    responses=PROBLEMS,
    summary="A witness agency cosigns a checkpoint it checked (agency credential or signature).",
)
async def post_cosignature(
    caller: Witness, session: Session, request: Request, size: Size, body: CosignatureIn
) -> dict[str, Any]:
    assert caller.agency is not None
    now = datetime.now(UTC)
    keys = select(AgencyKey).where(AgencyKey.agency_id == caller.agency, AgencyKey.use == "sig")
    public = [
        import_public(json.loads(k.jwk)).public_key
        for k in (await session.execute(keys)).scalars()
        if key_state(k, now) == "active"
    ]
    witnesses = [CosignatureVerifier(caller.agency, p) for p in public if isinstance(p, Ed25519PublicKey)]
    signer: NoteSigner | None = _publisher(request).signer
    if signer is None:
        raise HTTPException(503, "the audit service has no log key")
    refusal = "no active signing key of the agency verifies the cosignature"
    for witness in witnesses:
        try:
            await treehead.add_cosignature(session, size, witness, body.line, signer.verifier())
        except NoteError as exc:
            refusal = f"{exc.reason}: {exc}"
            continue
        except TreeError as exc:
            raise HTTPException(404, str(exc)) from exc
        await session.commit()
        log.info("checkpoint cosigned", size=size, witness=caller.agency)
        return {"size": size, "witness": caller.agency}
    raise HTTPException(422, f"cosignature refused: {refusal}")


def _leaf(row: AuditEntry, stored: dict[int, bytes]) -> AuditLeaf:
    return AuditLeaf(
        index=row.seq - 1, leaf_hash=stored.get(row.seq - 1, b"").hex(), record=auditlog.to_record(row)
    )


async def _leaves(session: AsyncSession, start: int, end: int) -> list[AuditLeaf]:
    rows = select(AuditEntry).where(AuditEntry.seq > start, AuditEntry.seq <= end).order_by(AuditEntry.seq)
    nodes = select(TlogNode).where(TlogNode.level == 0, TlogNode.idx >= start, TlogNode.idx < end)
    stored = {n.idx: n.hash for n in (await session.execute(nodes)).scalars()}
    return [_leaf(r, stored) for r in (await session.execute(rows)).scalars()]


def _range(start: int, end: int, size: int, limit: int = MAX_PAGE) -> int:
    if not 0 <= start <= end or end - start > limit:
        raise HTTPException(422, f"a range is 0 <= start <= end with at most {limit} leaves")
    return min(end, size)


@router.get(
    "/leaves",
    response_model=LeafPage,
    responses=PROBLEMS,
    summary="Leaves [start, end) with their stored leaf hashes (auditor credential).",
)
async def get_leaves(_: Auditor, session: Session, start: Count, end: Count) -> LeafPage:
    size = await tlog.tree_size(session)
    return LeafPage(size=size, leaves=await _leaves(session, start, _range(start, end, size)))


@router.get(
    "/nodes",
    response_model=NodePage,
    responses=PROBLEMS,
    summary="Stored complete-subtree hashes of one level, by index range (auditor credential).",
)
async def get_nodes(
    _: Auditor,
    session: Session,
    level: Annotated[int, Query(ge=0, le=63)],
    start: Count,
    end: Count,
) -> NodePage:
    size = await tlog.tree_size(session)
    end = _range(start, end, size >> level)
    query = (
        select(TlogNode)
        .where(TlogNode.level == level, TlogNode.idx >= start, TlogNode.idx < end)
        .order_by(TlogNode.idx)
    )
    nodes = [TreeNode(index=n.idx, hash=n.hash.hex()) for n in (await session.execute(query)).scalars()]
    return NodePage(level=level, size=size, nodes=nodes)


@router.get(
    "/proof/inclusion",
    response_model=InclusionProof,
    responses=PROBLEMS,
    summary="The inclusion proof of leaf `index` in the tree of `size` (auditor or agency credential).",
)
async def get_inclusion(
    _: Reader, session: Session, index: Count, size: Annotated[Count, Query(ge=1)]
) -> InclusionProof:
    proof = await tlog.inclusion(session, index, size)
    return InclusionProof(index=index, size=size, proof=[p.hex() for p in proof])


@router.get(
    "/proof/consistency",
    response_model=ConsistencyProof,
    responses=PROBLEMS,
    summary="The consistency proof between two tree sizes (auditor or agency credential).",
)
async def get_consistency(
    _: Reader,
    session: Session,
    old: Annotated[Count, Query(alias="from")],
    new: Annotated[Count, Query(alias="to")],
) -> ConsistencyProof:
    proof = await tlog.consistency(session, old, new)
    return ConsistencyProof(from_size=old, to_size=new, proof=[p.hex() for p in proof])


@router.get(
    "/export",
    response_model=AuditBundle,
    responses=PROBLEMS,
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
    checkpoint = await _checkpoint_row(session, None)
    if end > checkpoint.size:
        raise HTTPException(
            422, f"leaves up to {end} are not all in the latest checkpoint (size {checkpoint.size})"
        )
    _range(start, end, checkpoint.size, limit=10 * MAX_PAGE)
    leaves = await _leaves(session, start, end)
    inclusion = [
        [p.hex() for p in await tlog.inclusion(session, leaf.index, checkpoint.size)] for leaf in leaves
    ]
    consistency = None
    if old is not None:
        proof = await tlog.consistency(session, old, checkpoint.size)
        consistency = ConsistencyProof(from_size=old, to_size=checkpoint.size, proof=[p.hex() for p in proof])
    return AuditBundle(
        origin=treehead.checkpoint_origin(checkpoint.note),
        checkpoint=await treehead.published(session, checkpoint),
        start=start,
        end=end,
        leaves=leaves,
        inclusion=inclusion,
        consistency=consistency,
    )


def _load_signer(settings: Settings) -> NoteSigner | None:
    path = settings.audit_log_key_file or settings.desk_keys_dir / treehead.LOG_KEY_FILE
    try:
        return treehead.load_log_signer(path, settings.audit_log_origin)
    except KeyFileError as exc:
        log.error("audit log key unavailable", error=str(exc))
        return None


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url)
        app.state.settings = settings
        app.state.sessions = make_sessionmaker(engine)
        app.state.directory = DirectoryCache()
        publisher = Publisher(
            app.state.sessions,
            _load_signer(settings),
            AuditorQueries(timedelta(seconds=settings.audit_query_window_s)),
        )
        app.state.publisher = publisher
        await publisher.start()
        stop = asyncio.Event()
        loop = asyncio.create_task(publisher.run(settings.checkpoint_interval_s, stop))
        yield
        stop.set()
        await loop
        await engine.dispose()

    app = FastAPI(
        title="deskbridge audit",
        version="1",
        description="The append-only audit log as a Merkle tree (RFC 9162) with signed checkpoints "
        "(C2SP tlog-checkpoint). Entry and leaf routes need an auditor credential; checkpoints and proofs "
        "also an agency's, and agencies cosign checkpoints as witnesses (`Authorization: Bearer "
        "<credential>` or a request signed with the agency's key). Entries carry metadata and hashes, "
        "never notice contents.",
        lifespan=lifespan,
    )
    install_error_handlers(app)

    async def tree_error(_: Request, exc: Exception) -> JSONResponse:
        return problem(422, "Unprocessable Content", str(exc))

    app.add_exception_handler(TreeError, tree_error)
    app.include_router(router)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    return app
