"""A bare HTTP route for the bench's transport limit: FastAPI under uvicorn as the gateway runs them, one
route that reads the posted body and answers 202, and nothing else (no authentication, middleware, parsing,
storage or Kafka). What HTTP alone costs per request, against which the gateway's CPU can be read.
`python -m bench.bare PORT`."""

from __future__ import annotations

import sys

import uvicorn
from fastapi import FastAPI, Request

from services.platform.process import settle_memory


def make_app() -> FastAPI:
    app = FastAPI()

    @app.post("/v1/envelopes", status_code=202)
    async def carry(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    return app


def main(argv: list[str] | None = None) -> None:
    [port] = sys.argv[1:] if argv is None else argv
    config = uvicorn.Config(make_app(), host="127.0.0.1", port=int(port), log_level="warning")
    settle_memory()  # as the gateway before it serves
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
