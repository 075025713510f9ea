"""Structured logs (structlog): key=value for people, JSON for machines, each JSON line with the trace and
span it was written in (services/platform/tracing.py). Never log secrets or plaintext."""

from __future__ import annotations

import logging
import sys

import structlog
from opentelemetry import trace
from opentelemetry.trace import format_span_id, format_trace_id


def configure(level: str = "info", json: bool = False) -> None:
    logging.basicConfig(level=level.upper(), format="%(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *_renderers(json),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),  # stdout is for the program's output
        cache_logger_on_first_use=True,
    )


def _renderers(json: bool) -> list[structlog.typing.Processor]:
    """Tracebacks name the frames and lines, never the values of their local variables, which hold SQL
    parameters, envelope bytes and keys (structlog's defaults show them: rich's and the dict form's)."""
    if json:
        no_locals = structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        return [
            trace_ids,
            structlog.processors.ExceptionRenderer(no_locals),
            structlog.processors.JSONRenderer(),
        ]
    return [structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)]


def trace_ids(
    logger: structlog.typing.WrappedLogger, method: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """The current span's trace id and span id, as W3C traceparent spells them, so a line can be found
    from its trace and the other way round (there are none outside a request or a record)."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event["trace_id"] = format_trace_id(context.trace_id)
        event["span_id"] = format_span_id(context.span_id)
    return event
