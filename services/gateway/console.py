"""The browser console (console/, built by `make setup` into console/dist) as the gateway serves it at
/console: the files as built, what the console needs to know at start (config.json), and the headers that
keep it to its own scripts and the two APIs it talks to."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import anyio
from fastapi import FastAPI
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.platform.database import ROOT
from services.platform.errors import Unavailable
from services.platform.settings import Settings

PREFIX = "/console"
# Vite names every file under assets/ by its content's hash: a changed file is a new URL.
IMMUTABLE = "public, max-age=31536000, immutable"


def audit_url(settings: Settings) -> str:
    """The audit API's base URL as a browser reaches it."""
    return settings.audit_public_url or f"http://{settings.audit_host}:{settings.audit_port}"


def security_headers(settings: Settings) -> dict[str, str]:
    """Only the console's own files may run or style it, it may talk only to the gateway and the audit
    service, and no other site may frame it, post its forms or learn where its users came from."""
    audit = urlsplit(audit_url(settings))
    policy = (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self' {audit.scheme}://{audit.netloc}; form-action 'none'; frame-ancestors 'none'; "
        "base-uri 'none'"
    )
    return {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cross-Origin-Opener-Policy": "same-origin",
    }


class ConsoleFiles(StaticFiles):
    """The built console: hashed assets cached for a year, everything else (index.html) revalidated each
    time, and a 503 problem that says how to build it while there is nothing to serve."""

    async def check_config(self) -> None:
        """The folder is looked for on every request instead, so a console built after start is served."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        try:
            response = await super().get_response(path, scope)
        except HTTPException:
            assert self.directory is not None
            if not await anyio.to_thread.run_sync(os.path.isdir, self.directory):
                raise Unavailable(
                    f"the console is not built ({self.directory} is missing): run `make setup`, or point "
                    "DESKBRIDGE_CONSOLE_DIR at a built console",
                    "console_unavailable",
                ) from None
            raise
        response.headers["Cache-Control"] = IMMUTABLE if path.startswith("assets" + os.sep) else "no-cache"
        return response


class ConsoleHeaders:
    """Adds the security headers to every answer under /console, files, config and problems alike."""

    def __init__(self, app: ASGIApp, headers: dict[str, str]) -> None:
        self.app = app
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path != PREFIX and not path.startswith(PREFIX + "/"):
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).update(self.headers)
            await send(message)

        await self.app(scope, receive, with_headers)


def install_console(app: FastAPI, settings: Settings) -> None:
    """Serves the console at /console/ with its config.json; /console itself redirects there, so the
    console's relative URLs resolve under /console/."""

    @app.get(PREFIX, include_in_schema=False)
    async def console_root() -> RedirectResponse:
        return RedirectResponse(PREFIX + "/", status_code=308)

    @app.get(PREFIX + "/config.json", include_in_schema=False)
    async def console_config() -> JSONResponse:
        """Where the console finds the APIs and whom it serves; public, no secret ("gateway" empty: the
        gateway that served the console, same origin)."""
        config = {
            "gateway": "",
            "audit": audit_url(settings).rstrip("/"),
            "desk_agency": settings.desk_agency,
            "log_origin": settings.audit_log_origin,
        }
        return JSONResponse(config, headers={"Cache-Control": "no-cache"})

    directory = settings.console_dir or ROOT / "console" / "dist"
    app.mount(PREFIX, ConsoleFiles(directory=directory, html=True, check_dir=False), name="console")
    app.add_middleware(ConsoleHeaders, headers=security_headers(settings))
