"""What both HTTP apps share: every error answered as RFC 9457 problem details from the one table in
problems.py, a body-size cap, what FastAPI traces, answers that a poller revalidates by ETag, the database
session and what the app's lifespan built, per request."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

import structlog
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.telemetry import TelemetryConfig
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.datastructures import URL
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schemas.api import NO_NUL, Problem
from services.platform.errors import Error, Unavailable
from services.platform.kafka import EventPublisher
from services.platform.outage import DATABASE_UNREACHABLE, KAFKA_UNREACHABLE
from services.platform.problems import PROBLEM_TYPES, problem_type
from services.platform.settings import Settings

log = structlog.get_logger("http")

PROBLEM = "application/problem+json"
PROBLEMS_PATH = "/problems/"
RETRY_AFTER_S = Unavailable.retry_after_s
# What an OpenAPI route documents it may answer besides success: problem details, whatever the code.
ERRORS: dict[int | str, dict[str, object]] = {
    status: {"model": Problem} for status in (400, 401, 403, 404, 409, 413, 422, 503)
}
# Starlette's own answers (unknown route, wrong method) by status; everything of ours is an Error.
# FastAPI's own 400 is a body it could not read: invalid_json keeps that status.
_STARLETTE_CODES = {404: "not_found", 405: "method_not_allowed", 413: "too_large", 400: "invalid_json"}
# FastAPI's own OpenTelemetry SERVER span for each request, named by method and route, continuing the
# caller's traceparent, on the provider services/platform/tracing.py installs. Nothing more: no spans of
# its own inside a request, no OpenTelemetry log records (an exception's message may quote SQL parameters),
# and no exporter of its own from the environment (tracing.py has the one).
TELEMETRY: TelemetryConfig = {"operation_spans": False, "logs": False, "auto_configure": False}


def problem(
    base: URL, code: str, detail: str, headers: dict[str, str] | None = None, retry_after_s: int | None = None
) -> JSONResponse:
    """The problem document of `code`: its `type` is this API's page on the code, `code` repeats it for
    clients that switch on it."""
    kind = problem_type(code)
    more = dict(headers or {})
    if retry_after_s is not None:
        more["Retry-After"] = str(retry_after_s)
    return JSONResponse(
        {
            "type": f"{str(base).rstrip('/')}{PROBLEMS_PATH}{kind.code}",
            "title": kind.title,
            "status": kind.status,
            "detail": detail,
            "code": kind.code,
        },
        status_code=kind.status,
        media_type=PROBLEM,
        headers=more or None,
    )


def _validation_detail(exc: RequestValidationError) -> tuple[str, str]:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return "invalid_json", "the request body is not valid JSON"
    parts = []
    for error in errors[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        nul = error.get("ctx", {}).get("pattern") == NO_NUL
        parts.append(f"{where}: {'must not contain the NUL character (U+0000)' if nul else error.get('msg')}")
    return "invalid_request", "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    """Maps every error to problem details, and serves the page each problem `type` names."""

    async def named_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Error)
        if problem_type(exc.code).status >= 500:
            log.warning("refused", path=request.url.path, code=exc.code, detail=exc.detail)
        return problem(request.base_url, exc.code, exc.detail, _challenge(exc.code), exc.retry_after_s)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        code = _STARLETTE_CODES.get(exc.status_code, "internal_error")
        return problem(request.base_url, code, str(exc.detail), dict(exc.headers or {}))

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return problem(request.base_url, *_validation_detail(exc))

    def unavailable(request: Request, code: str, part: str, what: str) -> JSONResponse:
        log.warning(f"{code.removesuffix('_unavailable')} unreachable", path=request.url.path, error=what)
        detail = f"{part} is unreachable: {what}; nothing was done, retry after {RETRY_AFTER_S} s"
        return problem(request.base_url, code, detail, None, RETRY_AFTER_S)

    async def kafka_unreachable(request: Request, exc: Exception) -> JSONResponse:
        return unavailable(request, "kafka_unavailable", "Kafka", str(exc) or type(exc).__name__)

    async def database_unreachable(request: Request, exc: Exception) -> JSONResponse:
        what = exc.detail if isinstance(exc, Error) else type(exc).__name__
        return unavailable(request, "database_unavailable", "the database", what)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Starlette raises it on after answering, so the server logs the traceback (without locals).
        detail = "deskbridge could not answer this request; its operator's logs say why"
        return problem(request.base_url, "internal_error", detail)

    app.add_exception_handler(Exception, unexpected)
    app.add_exception_handler(Error, named_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    # Registered for each class, so an outage is never answered by the generic 500 handler.
    for database_error in DATABASE_UNREACHABLE:
        app.add_exception_handler(database_error, database_unreachable)
    for kafka_error in KAFKA_UNREACHABLE:
        app.add_exception_handler(kafka_error, kafka_unreachable)

    @app.get(PROBLEMS_PATH + "{code}", include_in_schema=False)
    async def problem_page(code: str) -> HTMLResponse:
        """What a problem `type` URI shows a person: the code, its status, title and meaning."""
        kind = PROBLEM_TYPES.get(code)
        if kind is None:
            raise HTTPException(404, f"no problem type {code!r}; docs/errors.md lists them")
        return HTMLResponse(
            f"<!doctype html><title>{kind.title}</title><h1>{kind.code}</h1>"
            f"<p>HTTP {kind.status} {kind.title}.</p><p>{kind.means}</p>"
        )


def _challenge(code: str) -> dict[str, str] | None:
    return {"WWW-Authenticate": "Bearer"} if problem_type(code).status == 401 else None


class BodyLimit:
    """Refuses bodies over `max_bytes` with 413, whether announced by Content-Length or streamed: the
    refusal is sent the moment the limit is passed, and the app then sees the client gone."""

    def __init__(self, app: ASGIApp, max_bytes: int, per_path: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.per_path = per_path or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.per_path.get(scope.get("path", ""), self.max_bytes)
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(scope, receive, send, limit)
            return
        seen = 0
        refused = False

        async def counting_receive() -> Message:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    refused = True
                    await self._refuse(scope, receive, send, limit)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:  # the app's own answer to a body it never got whole is dropped
                await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not refused:
                raise

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        response = problem(Request(scope).base_url, "too_large", f"the body exceeds {limit} bytes")
        await response(scope, receive, send)


def etagged(body: BaseModel, if_none_match: str | None) -> Response:
    """`body` as JSON with a strong ETag of its bytes, or a bodiless 304 when the request's If-None-Match
    already names that ETag: a client polling every second is sent nothing while nothing changed."""
    content = body.model_dump_json().encode()
    etag = f'"{hashlib.sha256(content).hexdigest()[:32]}"'
    headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
    held = [tag.strip().removeprefix("W/") for tag in (if_none_match or "").split(",")]
    if etag in held or held == ["*"]:
        return Response(status_code=304, headers=headers)
    return Response(content, media_type="application/json", headers=headers)


async def session_dependency(request: Request) -> AsyncIterator[AsyncSession]:
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    async with sessions() as session:
        yield session


def _state(request: Request, name: str) -> Any:
    return getattr(request.app.state, name)


async def publisher(request: Request) -> EventPublisher:
    value: EventPublisher = _state(request, "publisher")
    return value


async def settings(request: Request) -> Settings:
    value: Settings = _state(request, "settings")
    return value


Session = Annotated[AsyncSession, Depends(session_dependency)]
Publisher = Annotated[EventPublisher, Depends(publisher)]
Config = Annotated[Settings, Depends(settings)]
