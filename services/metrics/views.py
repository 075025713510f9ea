"""The metrics in either HTTP app: every answer counted, `GET /metrics` served (left out of the OpenAPI
document: it is for Prometheus, not for the API's clients), and the process's Metrics in the app's state
(`app.state.metrics`) for the routes that count what they do."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response

from services.metrics.exposition import PATH, HttpMetrics, authorized, scrape
from services.metrics.registry import Metrics
from services.platform.errors import Error


def install_metrics(app: FastAPI, metrics: Metrics, token: str | None) -> None:
    """Call last among the app's middleware, so the count includes what the others answer themselves
    (the body limit's 413s, CORS preflights)."""
    app.state.metrics = metrics

    @app.get(PATH, include_in_schema=False)
    async def serve_metrics(request: Request) -> Response:
        if not authorized(token, request.headers.get("authorization")):
            raise Error("scraping the metrics needs the bearer token set as metrics_token", "unauthenticated")
        body, content_type = scrape(metrics)
        return Response(body, media_type=content_type)

    app.add_middleware(HttpMetrics, metrics=metrics)
