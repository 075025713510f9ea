"""The gateway: the desk submits, partners pull and acknowledge, everyone reads the directory, and browsers
load the console (console.py). This module builds the app: what lives as long as it (engine, Kafka
producer, caches, the inbox notifier) and the routers of each domain (services/*/views.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from services.delivery import views as delivery
from services.delivery.notify import InboxNotifier
from services.envelope.errors import KeyFileError
from services.envelope.keys import DeskKeyFile
from services.envelope.service import MAX_ENVELOPE_BYTES
from services.gateway import asyncapi
from services.gateway.console import install_console
from services.metrics.registry import Metrics
from services.metrics.views import install_metrics
from services.metrics.watch import outages_watched
from services.notices import views as notices
from services.notices.limits import InboxRoom, TokenBuckets
from services.platform.kafka import EventPublisher, KafkaAccess, Topics
from services.platform.settings import Settings
from services.platform.views import TELEMETRY, BodyLimit, install_error_handlers
from services.trust import views as trust
from services.trust.signed_directory import DIRECTORY_KEY_FILE, load_directory_key
from services.trust.views import open_app_state

log = structlog.get_logger("gateway")


def create_app(settings: Settings, metrics: Metrics | None = None) -> FastAPI:
    """`metrics`: the process's registry; a new one by default."""
    metrics = metrics or Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = open_app_state(app, settings)
        kafka, topics = KafkaAccess.of(settings), Topics(settings.topic_prefix)
        app.state.publisher = EventPublisher(
            kafka, "deskbridge-gateway", topics, settings.kafka_send_timeout_s, notice_events=topics.events
        )
        app.state.desk_keys = DeskKeyFile(settings.desk_keys_dir)
        key_file = settings.directory_key_file or settings.desk_keys_dir / DIRECTORY_KEY_FILE
        try:
            app.state.directory_key = load_directory_key(key_file)
        except KeyFileError as exc:
            log.warning("directory key not loaded; the signed directory will answer 503", reason=str(exc))
            app.state.directory_key = None
        app.state.notifier = InboxNotifier(settings.inbox_recheck_s)
        app.state.buckets = TokenBuckets(settings.rate_limit_per_s, settings.rate_limit_burst)
        app.state.inbox_room = InboxRoom(settings.inbox_max_pending, settings.inbox_count_s)
        stop = asyncio.Event()
        following = asyncio.create_task(app.state.notifier.run(kafka, topics, stop))
        async with outages_watched(metrics, engine, kafka, settings.outage_probe_s):
            yield
        stop.set()
        await following
        await app.state.publisher.close()
        await app.state.autocommit.close()
        await engine.dispose()

    app = FastAPI(
        title="deskbridge gateway",
        version="1",
        description="Case notices between the Korean Desk and partner agencies. Every route but /healthz "
        "needs `Authorization: Bearer <credential>`; each route's summary names the role it admits. Where "
        "the agency role is admitted, an agency may instead sign the request with its directory key "
        '(RFC 9421 label sig1 covering "@method" "@target-uri" "content-digest", with created, keyid, '
        'nonce and alg="ed25519"; Content-Digest per RFC 9530). Errors are RFC 9457 problem details '
        "whose `code` docs/errors.md lists. What deskbridge sends asynchronously (Kafka records, webhook "
        f"POSTs, the inbox stream's events) is the AsyncAPI 3.0 document at {asyncapi.ROUTE}.",
        lifespan=lifespan,
        telemetry=TELEMETRY,
    )
    install_error_handlers(app)
    for router in (*notices.ROUTERS, *delivery.ROUTERS, *trust.ROUTERS):
        app.include_router(router)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(asyncapi.ROUTE, include_in_schema=False)
    async def asyncapi_document() -> JSONResponse:
        """Unauthenticated, like /openapi.json: the contract is public."""
        return JSONResponse(asyncapi.document())

    install_console(app, settings)

    # A sealed envelope may be as large as ingest accepts; anything up to twice that reaches the envelope
    # check, which refuses it with a reason the audit log records.
    app.add_middleware(
        BodyLimit, max_bytes=settings.max_body_bytes, per_path={"/v1/envelopes": 2 * MAX_ENVELOPE_BYTES}
    )
    install_metrics(app, metrics, settings.metrics_token)
    return app
