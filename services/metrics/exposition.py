"""How the numbers get out: the HTTP answers counted as they leave either app (pure ASGI, so this package
needs no FastAPI), the scrape itself in Prometheus's text format, and ingest's own metrics port.

Scrapes are open unless `metrics_token` is set; then they need `Authorization: Bearer <token>`, which
Prometheus sends from its scrape config (`authorization: {credentials_file: ...}`). Set it wherever the
gateway's port is reachable from outside the operator's network.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import structlog
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from services.metrics.registry import Metrics

log = structlog.get_logger("metrics")

PATH = "/metrics"
# Methods outside these are counted as "other": a client cannot grow the label set by inventing them.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNROUTED = "other"  # no route matched (404s, refusals before routing such as the body limit's 413)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def authorized(token: str | None, authorization: str | None) -> bool:
    """Whether a scrape may read the metrics: always without a token, else with exactly that bearer."""
    if token is None:
        return True
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def scrape(metrics: Metrics) -> tuple[bytes, str]:
    """The exposition in Prometheus's text format 0.0.4, which every Prometheus reads (our names need
    nothing of 1.0.0's)."""
    return generate_latest(metrics.registry), CONTENT_TYPE_PLAIN_0_0_4


class HttpMetrics:
    """Counts each answer by method, route template and status when its headers go out; an exception
    that escapes the app before any answer is counted as the 500 the server then sends. The route is
    the template the router matched (`/v1/notices/{notice_id}`), never the path, so ids stay out."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.counter = metrics.http_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"] if scope["method"] in METHODS else "other"
        answered = False

        async def counted(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start" and not answered:
                answered = True
                self.counter.labels(method, _route(scope), str(message["status"])).inc()
            await send(message)

        try:
            await self.app(scope, receive, counted)
        except Exception:
            if not answered:
                self.counter.labels(method, _route(scope), "500").inc()
            raise


def _route(scope: Scope) -> str:
    """The matched route's template; Starlette's router puts the route in the scope it shares with us."""
    route = scope.get("route")
    template = getattr(route, "path_format", None)
    return template if isinstance(template, str) else UNROUTED


# ---- ingest's metrics port --------------------------------------------------------------------------

READ_TIMEOUT_S = 5.0
MAX_HEAD_BYTES = 16 * 1024


async def serve(metrics: Metrics, host: str, port: int, token: str | None) -> asyncio.Server:
    """A minimal HTTP/1.1 server on the service's own event loop answering `GET /metrics`, for a
    process without an HTTP app (ingest). One request per connection; the caller closes the server."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
            status, content_type, body = _respond(metrics, token, head.decode("latin-1"))
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # a client that sends no complete request head in time gets no answer
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    return await asyncio.start_server(answer, host, port, limit=MAX_HEAD_BYTES)


def _respond(metrics: Metrics, token: str | None, head: str) -> tuple[str, str, bytes]:
    request, *lines = head.split("\r\n")
    method, _, rest = request.partition(" ")
    path = rest.partition(" ")[0].partition("?")[0]
    if path != PATH:
        return "404 Not Found", "text/plain", b"only /metrics is served here\n"
    if method != "GET":
        return "405 Method Not Allowed", "text/plain", b"GET /metrics\n"
    headers = {name.strip().lower(): value.strip() for name, _, value in (li.partition(":") for li in lines)}
    if not authorized(token, headers.get("authorization")):
        return "401 Unauthorized", "text/plain", b"a bearer token is needed (metrics_token)\n"
    body, content_type = scrape(metrics)
    return "200 OK", content_type, body
