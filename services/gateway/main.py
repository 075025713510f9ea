"""`python -m services.gateway`: the gateway API under uvicorn."""

from __future__ import annotations

import uvicorn

from services.common.logs import configure
from services.common.settings import Settings
from services.gateway.app import create_app


def main() -> None:
    settings = Settings()
    configure(settings.log_level, settings.log_json)
    uvicorn.run(
        create_app(settings),
        host=settings.gateway_host,
        port=settings.gateway_port,
        log_level="warning",
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
