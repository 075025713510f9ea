"""What both HTTP services share: RFC 9457 errors, bearer or signature authentication, a body-size cap."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

import structlog
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schemas.api import NO_NUL
from services.common.directory import DirectoryError, Principal
from services.common.envelope import EnvelopeError
from services.common.httpsig import SignatureError, authenticate_request
from services.common.keyring import DirectoryCache, DirectoryView
from services.common.outage import DATABASE_UNREACHABLE, KAFKA_UNREACHABLE
from services.common.settings import Settings

log = structlog.get_logger("http")

RETRY_AFTER_S = "5"
PROBLEM = "application/problem+json"
# Envelope refusals are 422 but for these; the reason code leads the detail either way.
ENVELOPE_STATUS = {"duplicate_notice": 409, "not_the_sender": 403, "oversize": 413}


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
        nul = error.get("ctx", {}).get("pattern") == NO_NUL
        parts.append(f"{where}: {'must not contain the NUL character (U+0000)' if nul else error.get('msg')}")
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
        status = ENVELOPE_STATUS.get(exc.reason, 422)
        return problem(status, "Envelope refused", f"{exc.reason}: {exc.detail}")

    async def kafka_unreachable(request: Request, exc: Exception) -> JSONResponse:
        log.warning("kafka unreachable", path=request.url.path, error=type(exc).__name__)
        return _unavailable("Kafka is unreachable", str(exc) or type(exc).__name__)

    async def database_unreachable(request: Request, exc: Exception) -> JSONResponse:
        log.warning("database unreachable", path=request.url.path, error=type(exc).__name__)
        return _unavailable("the database is unreachable", type(exc).__name__)

    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(DirectoryError, directory_error)
    app.add_exception_handler(EnvelopeError, envelope_error)
    # Registered for each class, so an outage is never answered by the generic 500 handler.
    for database_error in DATABASE_UNREACHABLE:
        app.add_exception_handler(database_error, database_unreachable)
    for kafka_error in KAFKA_UNREACHABLE:
        app.add_exception_handler(kafka_error, kafka_unreachable)


def _unavailable(part: str, detail: str) -> JSONResponse:
    """503 with Retry-After: nothing was done (a 2xx would say it was), so the caller sends it again."""
    return problem(
        503,
        "Service Unavailable",
        f"{part}: {detail}; nothing was done, retry after {RETRY_AFTER_S} s",
        {"Retry-After": RETRY_AFTER_S},
    )


def _title(status: int) -> str:
    from http import HTTPStatus

    return HTTPStatus(status).phrase


class BodyLimit:
    """Refuses bodies over `max_bytes` with 413, whether announced by Content-Length or streamed."""

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

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, counting_receive, send)
        except _TooLarge:
            await self._refuse(scope, receive, send, limit)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        response = problem(413, "Content Too Large", f"the body exceeds {limit} bytes")
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass


async def session_dependency(request: Request) -> AsyncIterator[AsyncSession]:
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    async with sessions() as session:
        yield session


Session = Annotated[AsyncSession, Depends(session_dependency)]


async def directory_view(request: Request, session: Session) -> DirectoryView:
    """The directory as of this request (one small read; see services/common/keyring.py). FastAPI
    resolves it once per request, so authentication and the route share it."""
    cache: DirectoryCache = request.app.state.directory
    return await cache.view(session)


Directory = Annotated[DirectoryView, Depends(directory_view)]
_bearer = HTTPBearer(auto_error=False, description="A deskbridge credential: `Authorization: Bearer dbk_…`")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def require(
    *roles: str, by_signature: bool = True, by_bearer: bool = True
) -> Callable[..., Awaitable[Principal]]:
    """A dependency that authenticates the caller and admits only the given roles.

    A bearer credential works for every role unless `by_bearer` is off; where the agency role is admitted
    and `by_signature`, an agency may sign the request with its own directory key instead (RFC 9421,
    services/common/httpsig.py).
    """
    signable = by_signature and "agency" in roles

    async def dependency(
        request: Request,
        directory: Directory,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        if credentials is None and "signature-input" in request.headers:
            if not signable:
                raise HTTPException(401, "this route takes a bearer credential, not a signature", _CHALLENGE)
            principal = await _signed_principal(request)
        elif credentials is None:
            needed = (
                "a request signature"
                if not by_bearer
                else "a bearer credential or a request signature"
                if signable
                else "a bearer credential"
            )
            raise HTTPException(401, f"{needed} is required", _CHALLENGE)
        elif not by_bearer:
            raise HTTPException(401, "this route takes a request signed with the agency's key", _CHALLENGE)
        else:
            found = directory.authenticate(credentials.credentials)
            if found is None:
                raise HTTPException(401, "the credential is not valid", _CHALLENGE)
            principal = found
        if principal.role not in roles:
            raise HTTPException(403, f"this needs the {' or '.join(roles)} role")
        return principal

    return dependency


def _target_uri(request: Request) -> str:
    """@target-uri as this server received it: scheme and Host as seen here, the path undecoded.

    Behind a reverse proxy this is the URL the proxy forwarded, so the proxy must keep the client's Host
    and the server must trust its X-Forwarded-Proto (uvicorn --proxy-headers --forwarded-allow-ips);
    otherwise signatures made for the public URL do not verify.
    """
    raw_path: bytes = request.scope.get("raw_path") or request.url.path.encode()
    query: bytes = request.scope.get("query_string", b"")
    target = f"{request.url.scheme}://{request.url.netloc}{raw_path.decode('latin-1')}"
    return f"{target}?{query.decode('latin-1')}" if query else target


async def _signed_principal(request: Request) -> Principal:
    settings: Settings = request.app.state.settings
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    body = await request.body()  # Starlette keeps it, so FastAPI still parses the body afterwards
    # A session of its own, committed at once: the nonce stays used even when the route then fails.
    async with sessions() as session:
        try:
            verified = await authenticate_request(
                session,
                request.method,
                _target_uri(request),
                request.headers.items(),
                body,
                settings.freshness_s,
                settings.clock_skew_s,
            )
        except SignatureError as exc:
            raise HTTPException(401, exc.detail, _CHALLENGE) from exc
        await session.commit()
    # A signature proves the key's agency and nothing more: it never grants auditor or admin.
    return Principal(f"key:{verified.kid}", "agency", verified.agency)
