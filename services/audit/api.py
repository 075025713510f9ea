"""The auditors' API: page through the log and its head; never any notice content."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Query
from sqlalchemy import select

from schemas.api import Problem
from schemas.audit import AuditPage
from services.common import auditlog
from services.common.db import AuditEntry, make_engine, make_sessionmaker
from services.common.directory import Principal
from services.common.http import BodyLimit, Session, install_error_handlers, require
from services.common.settings import Settings

router = APIRouter(prefix="/v1/audit", tags=["audit"])
Auditor = Annotated[Principal, Depends(require("auditor"))]


@router.get(
    "/events",
    response_model=AuditPage,
    responses={code: {"model": Problem} for code in (400, 401, 403, 422, 503)},
    summary="Audit entries in log order, filtered (auditor credential).",
)
async def get_events(
    _: Auditor,
    session: Session,
    after: Annotated[int, Query(ge=0, description="Return entries with seq greater than this.")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
    agency: str | None = None,
    notice_id: str | None = None,
    case_ref: str | None = None,
    event_type: Annotated[str | None, Query(alias="type")] = None,
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
    rows = list((await session.execute(query)).scalars())
    return AuditPage(
        entries=[auditlog.to_record(r) for r in rows],
        next_after=rows[-1].seq if len(rows) == limit else None,
        head_seq=head_seq,
        head_hash=head_hash,
    )


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url)
        app.state.sessions = make_sessionmaker(engine)
        yield
        await engine.dispose()

    app = FastAPI(
        title="deskbridge audit",
        version="1",
        description="The append-only audit log for auditors. Every route needs an auditor credential "
        "(`Authorization: Bearer <credential>`). Entries carry metadata and hashes, never notice contents.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(router)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    return app
