"""What both HTTP services share: RFC 9457 errors, bearer authentication, a body-size cap."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.directory import DirectoryError, Principal, authenticate
from services.common.envelope import EnvelopeError
from services.common.kafka import BrokerUnavailable

RETRY_AFTER_S = "5"
PROBLEM = "application/problem+json"


def problem(status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        {"type": "about:blank", "title": title, "status": status, "detail": detail},
        status_code=status,
        media_type=PROBLEM,
        headers=headers,
    )


def _validation_detail(exc: RequestValidationError) -> tuple[int, str]:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return 400, "the request body is not valid JSON"
    parts = []
    for error in errors[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {error.get('msg')}")
    return 422, "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        return problem(exc.status_code, _title(exc.status_code), str(exc.detail), dict(exc.headers or {}))

    async def validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        status, detail = _validation_detail(exc)
        return problem(status, _title(status), detail)

    async def directory_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, DirectoryError)
        return problem(exc.status, _title(exc.status), exc.detail)

    async def envelope_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, EnvelopeError)
        return problem(422, "Envelope refused", f"{exc.reason}: {exc.detail}")

    async def broker_down(_: Request, exc: Exception) -> JSONResponse:
        return problem(
            503,
            "Service Unavailable",
            f"{exc}; nothing was accepted, retry later",
            {"Retry-After": RETRY_AFTER_S},
        )

    async def database_down(_: Request, exc: Exception) -> JSONResponse:
        return problem(
            503,
            "Service Unavailable",
            "the database is unavailable; retry later",
            {"Retry-After": RETRY_AFTER_S},
        )

    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(DirectoryError, directory_error)
    app.add_exception_handler(EnvelopeError, envelope_error)
    app.add_exception_handler(BrokerUnavailable, broker_down)
    app.add_exception_handler(OperationalError, database_down)
    app.add_exception_handler(DBAPIError, database_down)
    app.add_exception_handler(OSError, database_down)


def _title(status: int) -> str:
    from http import HTTPStatus

    return HTTPStatus(status).phrase


class BodyLimit:
    """Refuses bodies over `max_bytes` with 413, whether announced by Content-Length or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, counting_receive, send)
        except _TooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem(413, "Content Too Large", f"the body exceeds {self.max_bytes} bytes")
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass


async def session_dependency(request: Request) -> AsyncIterator[AsyncSession]:
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    async with sessions() as session:
        yield session


Session = Annotated[AsyncSession, Depends(session_dependency)]
_bearer = HTTPBearer(auto_error=False, description="A deskbridge credential: `Authorization: Bearer dbk_…`")


def require(*roles: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency that authenticates the caller and admits only the given roles."""

    async def dependency(
        session: Session,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        if credentials is None:
            raise HTTPException(401, "a bearer credential is required", {"WWW-Authenticate": "Bearer"})
        principal = await authenticate(session, credentials.credentials)
        if principal is None:
            raise HTTPException(401, "the credential is not valid", {"WWW-Authenticate": "Bearer"})
        if principal.role not in roles:
            raise HTTPException(403, f"this needs the {' or '.join(roles)} role")
        return principal

    return dependency
