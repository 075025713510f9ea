"""Turns a Kafka record from any deskbridge topic into the audit event it stands for (metadata only)."""

from __future__ import annotations

from aiokafka import ConsumerRecord
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.events import Event, EventType, fact_id
from schemas.notices import RecallRequest
from services.envelope.errors import EnvelopeError
from services.envelope.service import Freshness, parse_envelope, sha256_hex
from services.notices.admission import admit
from services.notices.service import RECALL_TYPE
from services.platform.kafka import (
    DLQ_DETAIL,
    DLQ_OFFSET,
    DLQ_PARTITION,
    DLQ_REASON,
    DLQ_TOPIC,
    Topics,
    header_value,
    record_time,
)
from services.trust.keyring import DirectoryView


def _record_id(kind: EventType, coords: str) -> str:
    return fact_id(kind, coords)


async def to_event(
    session: AsyncSession,
    directory: DirectoryView | None,
    topics: Topics,
    record: ConsumerRecord[bytes, bytes],
    freshness: Freshness,
) -> Event | None:
    value = record.value or b""
    coords = f"{record.topic}:{record.partition}:{record.offset}"
    if record.topic == topics.notices and header_value(list(record.headers), "ce_type") == RECALL_TYPE:
        return _recall_requested(value, coords, record)
    if record.topic == topics.notices:
        if directory is None:
            raise ValueError("a notice is checked against the directory: read it for the notices topic")
        return await _submitted(session, directory, record, value, coords, freshness)
    if record.topic == topics.dead_letters:
        headers = list(record.headers)
        origin = ":".join(header_value(headers, h) or "?" for h in (DLQ_TOPIC, DLQ_PARTITION, DLQ_OFFSET))
        return Event(
            event_id=_record_id(EventType.notice_rejected, origin),
            type=EventType.notice_rejected,
            occurred_at=record_time(record),
            actor="deskbridge/ingest",
            envelope_sha256=sha256_hex(value),
            details={
                "reason": header_value(headers, DLQ_REASON),
                "detail": header_value(headers, DLQ_DETAIL),
                "record": origin,
            },
        )
    try:
        return Event.model_validate_json(value)
    except ValidationError:
        return None


async def _submitted(
    session: AsyncSession,
    directory: DirectoryView,
    record: ConsumerRecord[bytes, bytes],
    value: bytes,
    coords: str,
    freshness: Freshness,
) -> Event:
    """The audit service checks the outer signature itself: it trusts neither gateway nor ingest."""
    base = {
        "event_id": _record_id(EventType.notice_submitted, coords),
        "type": EventType.notice_submitted,
        "occurred_at": record_time(record),
    }
    try:
        envelope = parse_envelope(value)
    except EnvelopeError as exc:
        return Event(
            **base,
            envelope_sha256=sha256_hex(value),
            actor="unknown",
            details={"record": coords, "outer_signature": f"unreadable: {exc.code}"},
        )
    routing = envelope.routing
    try:
        await admit(session, directory, envelope, record_time(record), freshness)
        verdict = "valid"
    except EnvelopeError as exc:
        verdict = f"invalid: {exc.code}"
    return Event(
        **base,
        envelope_sha256=envelope.sha256,
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


def _recall_requested(value: bytes, coords: str, record: ConsumerRecord[bytes, bytes]) -> Event:
    base = {
        "event_id": _record_id(EventType.notice_recall_requested, coords),
        "type": EventType.notice_recall_requested,
        "occurred_at": record_time(record),
    }
    try:
        request = RecallRequest.model_validate_json(value)
    except ValidationError:
        return Event(**base, actor="unknown", details={"record": coords, "readable": False})
    return Event(
        **base,
        actor=request.requested_by,
        agency=request.sender,
        notice_id=request.notice_id,
        case_ref=request.case_ref,
        details={"record": coords, "reason": request.reason},
    )
