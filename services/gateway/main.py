"""`python -m services.gateway`: the gateway API under uvicorn."""

from __future__ import annotations

import asyncio
from types import FrameType

import uvicorn
from fastapi import FastAPI

from services.gateway.app import create_app
from services.platform import process, tracing
from services.platform.logs import configure
from services.platform.settings import Settings


class DrainingServer(uvicorn.Server):
    """On SIGTERM or Ctrl-C, waiting long-polls and streams answer at once instead of being cut off."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self._app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        notifier = getattr(self._app.state, "notifier", None)
        if notifier is not None:
            asyncio.get_running_loop().call_soon_threadsafe(lambda: asyncio.ensure_future(notifier.drain()))
        super().handle_exit(sig, frame)


def main() -> None:
    settings = Settings()
    configure(settings.log_level, settings.log_json)
    tracing.configure(settings, "gateway")
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.gateway_host,
        port=settings.gateway_port,
        log_level="warning",
        timeout_graceful_shutdown=5,
    )
    process.settle_memory()
    DrainingServer(config, app).run()


if __name__ == "__main__":
    main()
