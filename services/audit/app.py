"""The audit service's HTTP app: the auditors' API (services/transparency/views.py) with the checkpoint
publisher that signs on an interval while this replica holds the lease (services/transparency/lease.py),
both built and stopped with the app, delivery's stored receipts for evidence bundles, open to the browser
console that the gateway serves (CORS for its origins only)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import structlog
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware

from services.delivery.service import acknowledgements
from services.envelope.errors import KeyFileError
from services.evidence import views as evidence
from services.metrics.registry import Metrics
from services.metrics.views import install_metrics
from services.metrics.watch import outages_watched
from services.platform.kafka import KafkaAccess
from services.platform.settings import Settings
from services.platform.views import TELEMETRY, BodyLimit, install_error_handlers
from services.transparency import checkpoints
from services.transparency import views as transparency
from services.transparency.checkpoints import AuditorQueries, Publisher
from services.transparency.lease import Lease
from services.transparency.note import NoteSigner
from services.transparency.storage import TreeMemory
from services.trust.views import open_app_state

log = structlog.get_logger("audit")


def _load_signer(settings: Settings) -> NoteSigner | None:
    path = settings.audit_log_key_file or settings.desk_keys_dir / checkpoints.LOG_KEY_FILE
    try:
        return checkpoints.load_log_signer(path, settings.audit_log_origin)
    except KeyFileError as exc:
        log.error("audit log key unavailable", error=str(exc))
        return None


def console_origins(settings: Settings) -> list[str]:
    """Where the console's pages come from: the gateway that serves it, unless set otherwise."""
    if settings.console_origins is not None:
        return settings.console_origins
    port = settings.gateway_port
    return list(dict.fromkeys([f"http://{settings.gateway_host}:{port}", f"http://localhost:{port}"]))


def create_app(settings: Settings, metrics: Metrics | None = None, tree: TreeMemory | None = None) -> FastAPI:
    """`metrics`: the process's registry, and `tree` what it knows of the log's tree (its consumer's
    appends), both shared with its consumer (main.py); new ones by default."""
    metrics = metrics or Metrics()
    tree = tree if tree is not None else TreeMemory()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = open_app_state(app, settings)
        tree.reader = app.state.autocommit  # proofs read the tiles they lack straight on asyncpg
        lease = Lease(app.state.sessions, timedelta(seconds=settings.audit_lease_s))
        publisher = Publisher(
            app.state.sessions,
            _load_signer(settings),
            AuditorQueries(timedelta(seconds=settings.audit_query_window_s)),
            lease,
            tree=tree,
        )
        app.state.checkpoints = publisher
        await publisher.start()
        stop = asyncio.Event()
        loops = [
            asyncio.create_task(lease.keep(stop, publisher.publish_on_takeover)),
            asyncio.create_task(publisher.run(settings.checkpoint_interval_s, stop)),
        ]
        async with outages_watched(metrics, engine, KafkaAccess.of(settings), settings.outage_probe_s):
            yield
        stop.set()
        await asyncio.gather(*loops)
        await lease.release()  # after the last checkpoint: a standby takes over at its next tick
        tree.reader = None
        await app.state.autocommit.close()
        await engine.dispose()

    app = FastAPI(
        title="deskbridge audit",
        version="1",
        description="The append-only audit log as a Merkle tree (RFC 9162) with signed checkpoints "
        "(C2SP tlog-checkpoint). Entry and leaf routes need an auditor credential; checkpoints and proofs "
        "also an agency's, and agencies cosign checkpoints as witnesses (`Authorization: Bearer "
        "<credential>` or a request signed with the agency's key). Entries carry metadata and hashes, "
        "never notice contents. The same log is served read-only as C2SP tlog-tiles under /tlog (hash tiles "
        "to auditors and agencies, entry bundles to auditors). Errors are RFC 9457 problem details whose "
        "`code` docs/errors.md lists.",
        lifespan=lifespan,
        telemetry=TELEMETRY,
    )
    install_error_handlers(app)
    # Evidence bundles carry the receipts delivery stored, which sits above the log in the layers.
    app.state.acknowledgements = acknowledgements
    app.state.tree = tree  # proofs are served from it (services/transparency/views.py)
    app.include_router(transparency.router)
    app.include_router(transparency.tlog)
    app.include_router(evidence.router)

    @app.get("/healthz", include_in_schema=False)
    async def healthz(request: Request) -> dict[str, object]:
        """Alive, and whether this replica signs checkpoints (active) or stands by, as last read; it
        answers before the lifespan has built the publisher (a startup probe)."""
        publisher: Publisher | None = getattr(request.app.state, "checkpoints", None)
        lease = publisher.lease if publisher is not None else None
        return {"status": "ok", "checkpoints": lease.status() if lease is not None else None}

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    # Outermost, so refusals carry it too. Bearer credentials go in the Authorization header, never in
    # cookies: no credentials mode, and no origin but the console's is let read an answer.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=console_origins(settings),
        allow_methods=["GET", "POST"],
        allow_headers=["Authorization", "Content-Type"],
        expose_headers=["Retry-After"],
        allow_credentials=False,
        max_age=600,
    )
    install_metrics(app, metrics, settings.metrics_token)
    metrics.audit_log(lambda: getattr(app.state, "checkpoints", None))  # the publisher, once started
    return app
