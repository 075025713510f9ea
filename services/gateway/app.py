"""The gateway: the desk submits, partners pull and acknowledge, everyone reads the directory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI

from services.common.db import make_engine, make_sessionmaker
from services.common.http import BodyLimit, install_error_handlers
from services.common.kafka import EventPublisher, Topics
from services.common.keys import AgencyKeys, KeyFileError
from services.common.settings import Settings
from services.gateway import admin, directory, inbox, notices

log = structlog.get_logger("gateway")


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url)
        app.state.settings = settings
        app.state.sessions = make_sessionmaker(engine)
        app.state.publisher = EventPublisher(
            settings.kafka_bootstrap,
            "deskbridge-gateway",
            Topics(settings.topic_prefix),
            settings.kafka_send_timeout_s,
        )
        try:
            app.state.desk_keys = AgencyKeys.load(settings.desk_keys_dir)
        except KeyFileError as exc:
            log.warning("desk keys not loaded; submissions will answer 503", reason=str(exc))
            app.state.desk_keys = None
        yield
        await app.state.publisher.close()
        await engine.dispose()

    app = FastAPI(
        title="deskbridge gateway",
        version="1",
        description="Case notices between the Korean Desk and partner agencies. Every route but /healthz "
        "needs `Authorization: Bearer <credential>`; each route's summary names the role it admits.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    for module in (notices, inbox, directory, admin):
        app.include_router(module.router)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    return app
