"""Turns a Kafka record from any deskbridge topic into the audit event it stands for (metadata only)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from aiokafka import ConsumerRecord
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.events import Event, EventType
from services.common.delivery import verify_envelope
from services.common.envelope import EnvelopeError, parse_envelope, sha256_hex
from services.common.kafka import Topics, header_value


def _record_id(kind: EventType, coords: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"deskbridge:{kind.value}:{coords}"))


def _time(record: ConsumerRecord[bytes, bytes]) -> datetime:
    return datetime.fromtimestamp(record.timestamp / 1000, UTC)


async def to_event(
    session: AsyncSession, topics: Topics, record: ConsumerRecord[bytes, bytes]
) -> Event | None:
    value = record.value or b""
    coords = f"{record.topic}:{record.partition}:{record.offset}"
    if record.topic == topics.notices:
        return await _submitted(session, record, value, coords)
    if record.topic == topics.dead_letters:
        headers = list(record.headers)
        origin = ":".join(
            header_value(headers, h) or "?" for h in ("dlq_topic", "dlq_partition", "dlq_offset")
        )
        return Event(
            event_id=_record_id(EventType.notice_rejected, origin),
            type=EventType.notice_rejected,
            occurred_at=_time(record),
            actor="deskbridge/ingest",
            envelope_sha256=sha256_hex(value),
            details={
                "reason": header_value(headers, "dlq_reason"),
                "detail": header_value(headers, "dlq_detail"),
                "record": origin,
            },
        )
    try:
        return Event.model_validate_json(value)
    except ValidationError:
        return None


async def _submitted(
    session: AsyncSession, record: ConsumerRecord[bytes, bytes], value: bytes, coords: str
) -> Event:
    """The audit service checks the outer signature itself: it trusts neither gateway nor ingest."""
    base = {
        "event_id": _record_id(EventType.notice_submitted, coords),
        "type": EventType.notice_submitted,
        "occurred_at": _time(record),
        "envelope_sha256": sha256_hex(value),
    }
    try:
        envelope = parse_envelope(value)
    except EnvelopeError as exc:
        return Event(
            **base,
            actor="unknown",
            details={"record": coords, "outer_signature": f"unreadable: {exc.reason}"},
        )
    routing = envelope.routing
    try:
        await verify_envelope(session, envelope)
        verdict = "valid"
    except EnvelopeError as exc:
        verdict = f"invalid: {exc.reason}"
    return Event(
        **base,
        actor=routing.sender,
        agency=routing.sender,
        notice_id=routing.notice_id,
        case_ref=routing.case_ref,
        details={
            "record": coords,
            "notice_type": routing.notice_type.value,
            "priority": routing.priority.value,
            "tlp": routing.tlp.value,
            "recipients": ",".join(routing.recipients),
            "outer_signature": verdict,
        },
    )
