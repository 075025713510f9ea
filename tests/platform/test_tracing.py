"""Traces (services/platform/tracing.py): a notice POSTed with a traceparent is one trace from the gateway's
HTTP span through Kafka to ingest and audit, and on to the partner's webhook; JSON log lines carry the trace;
without an endpoint nothing is recorded or exported, and the ids still travel.

The stack runs gateway, ingest and audit in this process, so one tracer provider, exporting to memory,
sees every span.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest
import structlog
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from devstack.kafka import free_port
from services.delivery.models import NoticeRow
from services.ingest.main import run_webhooks
from services.platform import tracing
from services.platform.logs import configure
from services.platform.settings import Settings
from services.platform.views import TELEMETRY
from tests.conftest import ServiceTasks, Stack, eventually
from tests.support.sealing import notice_body

DESK, KH = "kr-desk", "kh-cnp"


@dataclass
class Spans:
    provider: TracerProvider
    exporter: InMemorySpanExporter

    def of(self, trace_id: str) -> list[ReadableSpan]:
        """The finished spans of one trace."""
        self.provider.force_flush()
        wanted = int(trace_id, 16)
        return [s for s in self.exporter.get_finished_spans() if s.context and s.context.trace_id == wanted]


@pytest.fixture(scope="module")
def spans() -> Iterator[Spans]:
    """The process's tracer provider (OpenTelemetry allows one), exporting to memory for these tests."""
    exporter = InMemorySpanExporter()
    provider = tracing.provider("gateway", exporter)
    trace.set_tracer_provider(provider)
    assert trace.get_tracer_provider() is provider, "a tracer provider was installed before this module"
    yield Spans(provider, exporter)
    provider.shutdown()


def caller_traceparent() -> tuple[str, str, str]:
    """A caller's trace id, its span id, and the traceparent naming them (sampled)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


def one(found: list[ReadableSpan], name: str, **attributes: object) -> ReadableSpan:
    matching = [
        s
        for s in found
        if s.name == name and all((s.attributes or {}).get(k) == v for k, v in attributes.items())
    ]
    assert len(matching) == 1, f"{name} {attributes}: {[(s.name, s.attributes) for s in found]}"
    return matching[0]


def parent_of(span: ReadableSpan) -> int:
    assert span.parent is not None, f"{span.name} has no parent"
    return span.parent.span_id


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def attribute_values(found: list[ReadableSpan]) -> str:
    return " ".join(str(v) for s in found for v in (s.attributes or {}).values())


async def test_a_notice_is_one_trace_from_the_gateway_through_kafka_to_ingest_and_audit(
    stack: Stack, spans: Spans
) -> None:
    trace_id, caller, traceparent = caller_traceparent()
    body = notice_body([KH])
    response = await stack.client(DESK).post(
        "/v1/notices", json=body, headers={"traceparent": traceparent, "tracestate": "desk=kr"}
    )
    assert response.status_code == 202, response.text
    notice_id = body["notice_id"]
    topics, prefix = stack.topics, stack.settings.topic_prefix
    ingest_group, audit_group = f"{prefix}deskbridge-ingest", f"{prefix}deskbridge-audit"

    async def complete() -> list[ReadableSpan]:
        found = spans.of(trace_id)
        audited = [s for s in found if s.name == f"process {topics.deliveries}"]
        return found if audited else []

    found = await eventually(complete)

    server = one(found, "POST /v1/notices")
    assert server.kind is SpanKind.SERVER
    assert server.parent is not None and server.parent.is_remote and server.parent.span_id == int(caller, 16)
    assert server.attributes == {
        "server.address": "127.0.0.1",
        "server.port": stack.settings.gateway_port,
        "http.request.method": "POST",
        "url.scheme": "http",
        "url.path": "/v1/notices",
        "network.protocol.version": "1.1",
        "http.route": "/v1/notices",
        "http.response.status_code": 202,
    }

    sent = one(found, f"send {topics.notices}")
    assert sent.kind is SpanKind.PRODUCER and parent_of(sent) == span_id(server)
    submitted = sent.attributes or {}
    assert submitted["messaging.system"] == "kafka"
    assert submitted["messaging.operation.type"] == "send"
    assert submitted["messaging.destination.name"] == topics.notices
    assert submitted["messaging.message.id"] == notice_id
    assert submitted["messaging.kafka.message.key"] == body["case_ref"]
    partition, offset = submitted["messaging.destination.partition.id"], submitted["messaging.kafka.offset"]
    async with stack.sessions() as session:
        stored = await session.get(NoticeRow, notice_id)
    assert stored is not None and (str(stored.kafka_partition), stored.kafka_offset) == (partition, offset)

    coordinates = {"messaging.destination.partition.id": partition, "messaging.kafka.offset": offset}
    consumed = f"process {topics.notices}"
    ingest = one(found, consumed, **{"messaging.consumer.group.name": ingest_group}, **coordinates)
    audit = one(found, consumed, **{"messaging.consumer.group.name": audit_group}, **coordinates)
    for span in (ingest, audit):
        assert span.kind is SpanKind.CONSUMER and parent_of(span) == span_id(sent)
        assert (span.attributes or {})["messaging.operation.type"] == "process"

    # What ingest sends on the record's behalf (its delivery event) continues from its span, and audit
    # appends it in the same trace.
    delivered = [s for s in found if s.name == f"send {topics.deliveries}"]
    assert delivered and all(parent_of(s) == span_id(ingest) for s in delivered)
    appended = [s for s in found if s.name == f"process {topics.deliveries}"]
    assert {parent_of(s) for s in appended} <= {span_id(s) for s in delivered}
    assert all((s.attributes or {})["messaging.consumer.group.name"] == audit_group for s in appended)
    assert all(s.context is not None and s.context.trace_state.get("desk") == "kr" for s in appended)

    # The notice keeps ingest's span for its webhook POSTs, however much later.
    assert stored.traceparent == f"00-{trace_id}-{span_id(ingest):016x}-01"

    # Metadata only: neither what the notice says nor the desk's credential.
    values = attribute_values(found)
    assert body["summary"] not in values and "KIM Min-jun" not in values
    assert stack.token(DESK) not in values


@pytest.fixture
async def hook_headers(stack: Stack) -> AsyncIterator[tuple[str, list[httpx.Headers]]]:
    """A partner's webhook endpoint on loopback, with a secret in its path; the headers of each POST."""
    seen: list[httpx.Headers] = []

    async def take(request: Request) -> Response:
        seen.append(httpx.Headers(request.headers.raw))
        return Response(status_code=204)

    services = ServiceTasks()
    base = await services.serve(
        Starlette(routes=[Route("/hooks/{secret}", take, methods=["POST"])]), free_port()
    )
    try:
        yield f"{base}/hooks/s3cret-path-token", seen
    finally:
        await services.close()


@pytest.mark.settings(webhook_allow_private=True)
async def test_the_webhook_post_continues_the_notices_trace_to_the_partner(
    stack: Stack, spans: Spans, hook_headers: tuple[str, list[httpx.Headers]]
) -> None:
    url, seen = hook_headers
    registered = await stack.client(KH).post("/v1/webhooks", json={"url": url, "filters": {}})
    assert registered.status_code == 201, registered.text
    trace_id, _, traceparent = caller_traceparent()
    body = notice_body([KH])
    response = await stack.client(DESK).post("/v1/notices", json=body, headers={"traceparent": traceparent})
    assert response.status_code == 202, response.text

    stop = asyncio.Event()
    dispatcher = asyncio.create_task(run_webhooks(stack.settings, stop))
    try:
        await eventually(lambda: _at_least_one(seen))
    finally:
        stop.set()
        await asyncio.wait_for(dispatcher, 30)

    version, received_trace, received_parent, flags = seen[0]["traceparent"].split("-")
    assert (version, received_trace, flags) == ("00", trace_id, "01")
    found = spans.of(trace_id)
    post = one(found, "POST")
    assert post.kind is SpanKind.CLIENT and span_id(post) == int(received_parent, 16)
    ingest = one(
        found,
        f"process {stack.topics.notices}",
        **{"messaging.consumer.group.name": f"{stack.settings.topic_prefix}deskbridge-ingest"},
    )
    assert parent_of(post) == span_id(ingest)
    assert post.attributes == {
        "http.request.method": "POST",
        "url.scheme": "http",
        "server.address": "127.0.0.1",
        "server.port": int(url.split(":")[2].split("/")[0]),
        "http.response.status_code": 204,
    }
    assert "s3cret-path-token" not in attribute_values(found)


async def _at_least_one(seen: list[httpx.Headers]) -> bool:
    return len(seen) >= 1


async def test_a_json_log_line_written_inside_a_request_has_its_trace_id(
    spans: Spans, capsys: pytest.CaptureFixture[str]
) -> None:
    trace_id, caller, traceparent = caller_traceparent()
    saved = structlog.get_config()
    try:
        configure("info", json=True)
        log = structlog.get_logger("test")

        app = FastAPI(telemetry=TELEMETRY)

        @app.get("/notices/{notice_id}", status_code=204)
        async def logging_route(notice_id: str) -> None:
            log.info("inside the request", notice_id=notice_id)

        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as client:
            response = await client.get("/notices/n-1", headers={"traceparent": traceparent})
        assert response.status_code == 204
        log.info("outside any request")
    finally:
        structlog.configure(**saved)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    inside = next(line for line in lines if line["event"] == "inside the request")
    server = one(spans.of(trace_id), "GET /notices/{notice_id}")
    assert inside["trace_id"] == trace_id and inside["span_id"] == f"{span_id(server):016x}"
    outside = next(line for line in lines if line["event"] == "outside any request")
    assert "trace_id" not in outside


class Counting(SpanProcessor):
    def __init__(self) -> None:
        self.calls = 0

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.calls += 1

    def on_end(self, span: ReadableSpan) -> None:
        self.calls += 1


def test_without_an_endpoint_no_span_is_recorded_or_processed_and_the_ids_still_travel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert tracing.exporter(Settings()) is None
    off = tracing.provider("ingest", tracing.exporter(Settings()))
    counting = Counting()
    off.add_span_processor(counting)
    trace_id, caller, traceparent = caller_traceparent()
    span = off.get_tracer("test").start_span("x", tracing.context_from({"traceparent": traceparent}))
    span.end()
    assert not span.is_recording() and counting.calls == 0
    version, carried_trace, carried_parent, flags = tracing.trace_headers(span)["traceparent"].split("-")
    assert (carried_trace, flags) == (trace_id, "00") and carried_parent != caller


def test_an_endpoint_from_the_settings_or_the_standard_variable_exports_over_otlp_http(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    ours = tracing.exporter(Settings(otel_exporter_otlp_endpoint="http://collector:4318/"))
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://standard:4318")
    standard = tracing.exporter(Settings())
    for exporter, endpoint in (
        (ours, "http://collector:4318/v1/traces"),
        (standard, "http://standard:4318/v1/traces"),
    ):
        assert exporter is not None
        assert exporter._endpoint == endpoint  # type: ignore[attr-defined]
        exporter.shutdown()
