"""Traces (OpenTelemetry): the W3C trace context of a request travels in the Kafka record headers and on to
the partners' webhooks, so one trace shows a notice from the gateway's HTTP request through ingest and
audit to its webhook POST (docs/operations.md, "Traces and logs"). FastAPI makes the HTTP server spans
(services/platform/views.py); this module the provider, the Kafka spans and the webhook's client span.

Every process has a tracer provider. Without an OTLP endpoint it samples nothing: each span is a bare
context with fresh ids, no span processor ever sees one, and the ids still reach the records' headers and
the logs. With one, spans go out in batches over OTLP/HTTP. Span names and attributes follow the
OpenTelemetry semantic conventions for HTTP and messaging. Attributes are metadata only: topics,
partitions, offsets, record keys (a case reference or an agency), CloudEvents ids (a notice id or an event
id), statuses, error types. Never a body, an exception's message, a credential or a webhook's URL, whose
path and query may hold the partner's secret.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal, TypeVar
from urllib.parse import urlsplit

from aiokafka import ConsumerRecord
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_NAMESPACE, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from services.platform.settings import Settings

T = TypeVar("T")
Headers = list[tuple[str, bytes]]
Service = Literal["gateway", "ingest", "audit"]

TRACER = trace.get_tracer("deskbridge")
# W3C Trace Context only: baggage from a caller is not carried on to Kafka or to the partners.
PROPAGATOR = TraceContextTextMapPropagator()
TRACE_HEADERS = ("traceparent", "tracestate")


def provider(service: Service, exporter: SpanExporter | None) -> TracerProvider:
    """A tracer provider naming the service. Without `exporter` it samples nothing, so no span records
    an attribute or reaches a processor; with one, the standard OTEL_TRACES_SAMPLER decides (by default
    the caller's decision, and every trace that starts here)."""
    resource = Resource.create({SERVICE_NAME: f"deskbridge-{service}", SERVICE_NAMESPACE: "deskbridge"})
    if exporter is None:
        return TracerProvider(resource=resource, sampler=ALWAYS_OFF)
    made = TracerProvider(resource=resource)
    made.add_span_processor(BatchSpanProcessor(exporter))
    return made


def exporter(settings: Settings) -> SpanExporter | None:
    """OTLP over HTTP to our setting's endpoint, else to the standard variables'; None without any (the
    exporter's package is imported only when there is one)."""
    base = settings.otel_exporter_otlp_endpoint
    standard = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if not base and not standard:
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    # Our setting is a base URL like OTEL_EXPORTER_OTLP_ENDPOINT; the exporter reads the standard ones itself.
    return OTLPSpanExporter(endpoint=f"{base.rstrip('/')}/v1/traces" if base else None)


def configure(settings: Settings, service: Service) -> None:
    """Installs the process's tracer provider (once per process: OpenTelemetry keeps the first)."""
    trace.set_tracer_provider(provider(service, exporter(settings)))


def _failed(span: Span, exc: BaseException) -> None:
    """The exception's type only: its message may quote SQL parameters or a record's bytes."""
    if isinstance(exc, Exception):
        span.set_attribute("error.type", type(exc).__qualname__)
        span.set_status(Status(StatusCode.ERROR))


def context_from(carrier: dict[str, str]) -> Context:
    """The trace context a caller sent (`traceparent`, `tracestate`), or an empty one."""
    return PROPAGATOR.extract(carrier)


def trace_headers(span: Span) -> dict[str, str]:
    """`span`'s traceparent (and tracestate) for an outgoing record or request."""
    carrier: dict[str, str] = {}
    PROPAGATOR.inject(carrier, trace.set_span_in_context(span))
    return carrier


# Kafka


@dataclass(frozen=True)
class Send:
    """A record being produced: its PRODUCER span and the headers that carry the span on."""

    span: Span
    headers: Headers

    def acked(self, partition: int, offset: int) -> None:
        if self.span.is_recording():
            self.span.set_attribute("messaging.destination.partition.id", str(partition))
            self.span.set_attribute("messaging.kafka.offset", offset)


@contextmanager
def sending(topic: str, key: str, ce_id: str | None, parent: Context | None = None) -> Iterator[Send]:
    """The span of producing one record to `topic` until Kafka acknowledged it, the child of `parent`
    (default: the current context). It is the record's creation context: the headers carry it."""
    span = TRACER.start_span(
        f"send {topic}",
        context=parent,
        kind=SpanKind.PRODUCER,
        attributes=_messaging("send", topic, key, ce_id),
    )
    try:
        yield Send(span, [(k, v.encode()) for k, v in trace_headers(span).items()])
    except BaseException as exc:
        _failed(span, exc)
        raise
    finally:
        span.end()


def _messaging(operation: str, topic: str, key: str | None, ce_id: str | None) -> dict[str, str]:
    attributes = {
        "messaging.system": "kafka",
        "messaging.operation.name": operation,
        "messaging.operation.type": operation,
        "messaging.destination.name": topic,
    }
    if key is not None:
        attributes["messaging.kafka.message.key"] = key
    if ce_id is not None:
        attributes["messaging.message.id"] = ce_id
    return attributes


def _process_span(record: ConsumerRecord[bytes, bytes], group: str) -> Span:
    """A CONSUMER span for the record, the child of the context its producer put in its headers."""
    headers = {k: v.decode(errors="replace") for k, v in record.headers if k in ("ce_id", *TRACE_HEADERS)}
    key = record.key.decode(errors="replace") if record.key else None
    attributes: dict[str, str | int] = {
        **_messaging("process", record.topic, key, headers.get("ce_id")),
        "messaging.consumer.group.name": group,
        "messaging.destination.partition.id": str(record.partition),
        "messaging.kafka.offset": record.offset,
    }
    return TRACER.start_span(f"process {record.topic}", context_from(headers), SpanKind.CONSUMER, attributes)


_Coords = tuple[str, int, int]
# The process spans of the batch the current task is handling, by record.
_batch: ContextVar[dict[_Coords, Span] | None] = ContextVar("deskbridge_batch_spans", default=None)


def _coords(record: ConsumerRecord[bytes, bytes]) -> _Coords:
    return record.topic, record.partition, record.offset


@contextmanager
def processing(records: Sequence[ConsumerRecord[bytes, bytes]], group: str) -> Iterator[None]:
    """One CONSUMER span per record of a batch, the child of the context in the record's headers, all
    ending when the batch is durable or failed (a retried batch gets new ones). Inside, `within(record)`
    makes a record's span current."""
    spans = {_coords(record): _process_span(record, group) for record in records}
    token = _batch.set(spans)
    try:
        yield
    except BaseException as exc:
        for span in spans.values():
            _failed(span, exc)
        raise
    finally:
        _batch.reset(token)
        for span in spans.values():
            span.end()


def _span_of(record: ConsumerRecord[bytes, bytes]) -> Span | None:
    return (_batch.get() or {}).get(_coords(record))


def within(record: ConsumerRecord[bytes, bytes]) -> AbstractContextManager[object]:
    """Makes the record's process span current (what it logs and produces belongs to its trace); outside
    `processing`, nothing changes. Failures are recorded by `processing`, once."""
    span = _span_of(record)
    if span is None:
        return nullcontext()
    return trace.use_span(span, record_exception=False, set_status_on_exception=False)


def record_traceparent(record: ConsumerRecord[bytes, bytes]) -> str | None:
    """The traceparent of the record's process span (outside `processing`: of its producer), to store
    with what outlives the batch (a delivered notice)."""
    span = _span_of(record)
    if span is None:
        return next((v.decode(errors="replace") for k, v in record.headers if k == "traceparent"), None)
    return trace_headers(span).get("traceparent")


def in_current_context(items: Sequence[T]) -> list[tuple[T, Context]]:
    """Each item with the current context, for records produced later on its behalf."""
    now = otel_context.get_current()
    return [(item, now) for item in items]


# HTTP (FastAPI traces the requests served: services/platform/views.py)


@dataclass(frozen=True)
class Call:
    """An HTTP request being made, and its CLIENT span."""

    span: Span

    def answered(self, status: int) -> None:
        if self.span.is_recording():
            self.span.set_attribute("http.response.status_code", status)
            if status >= 400:
                self.failed(str(status))

    def failed(self, kind: str) -> None:
        """No answer, or an error status: `kind` says which (error.type)."""
        if self.span.is_recording():
            self.span.set_attribute("error.type", kind)
            self.span.set_status(Status(StatusCode.ERROR))


@contextmanager
def calling(method: str, url: str, parent: str | None) -> Iterator[tuple[Call, dict[str, str]]]:
    """The CLIENT span of a request to `url` (its host and port only are recorded), the child of the
    `parent` traceparent (stored with what the request is about) or else of the current context; with
    the headers that carry the span to the server."""
    parts = urlsplit(url)
    attributes: dict[str, str | int] = {"http.request.method": method, "url.scheme": parts.scheme}
    if parts.hostname:
        attributes["server.address"] = parts.hostname
    with suppress(ValueError):  # a port out of range: the request itself will say so
        attributes["server.port"] = parts.port or (443 if parts.scheme == "https" else 80)
    context = context_from({"traceparent": parent}) if parent else None
    span = TRACER.start_span(method, context, SpanKind.CLIENT, attributes)
    try:
        yield Call(span), trace_headers(span)
    except BaseException as exc:
        _failed(span, exc)
        raise
    finally:
        span.end()
