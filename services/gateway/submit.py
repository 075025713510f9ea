"""The submission path: an envelope (sealed here for the desk, or by a partner on its own machine) is
admitted, made durable in Kafka, and recorded. A refusal is audited with its reason."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.events import Event, EventType
from schemas.notices import Notice, NoticeDraft
from services.common.admission import Freshness, admit
from services.common.db import NoticeRow, Submission, utcnow
from services.common.directory import DirectoryError, encryption_keys
from services.common.envelope import EnvelopeError, ParsedEnvelope, parse_envelope, seal_notice, sha256_hex
from services.common.kafka import EventPublisher, cloud_headers
from services.common.keyring import DirectoryView
from services.common.keys import AgencyKeys
from services.gateway.limits import InboxRoom

SOURCE = "deskbridge/gateway"


def rejection(actor: str, reason: str, detail: str, raw: bytes, envelope: ParsedEnvelope | None) -> Event:
    """The audit record of a refused submission: who tried, why, and the hash of what they sent."""
    routing = envelope.routing if envelope is not None else None
    digest = sha256_hex(raw)
    return Event(
        event_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"deskbridge:rejected:{actor}:{digest}:{reason}")),
        type=EventType.notice_rejected,
        occurred_at=utcnow(),
        actor=actor,
        agency=actor,
        notice_id=routing.notice_id if routing is not None else None,
        case_ref=routing.case_ref if routing is not None else None,
        envelope_sha256=digest,
        details={"reason": reason, "detail": detail[:500], "stage": "gateway"},
    )


async def _refuse(publisher: EventPublisher, event: Event) -> None:
    # The refusal is audited before it is answered; if Kafka is down the caller gets 503 instead.
    await publisher.publish(event, SOURCE)


@dataclass(frozen=True)
class Intake:
    """What admitting one submission needs, gathered per request."""

    session: AsyncSession
    directory: DirectoryView
    publisher: EventPublisher
    freshness: Freshness
    room: InboxRoom


async def accept_envelope(intake: Intake, raw: bytes, caller: str) -> Submission:
    """Admits an envelope sent by `caller` and returns only after Kafka holds it with acks=all."""
    session = intake.session
    envelope: ParsedEnvelope | None = None
    try:
        envelope = parse_envelope(raw)
        if envelope.routing.sender != caller:
            raise EnvelopeError(
                "not_the_sender", f"the envelope is sent as {envelope.routing.sender}, you are {caller}"
            )
        again = await _same_again(session, envelope)
        if again is not None:
            return again
        await admit(session, intake.directory, envelope, utcnow(), intake.freshness)
        await intake.room.check(session, envelope.routing.recipients)
    except EnvelopeError as exc:
        await session.rollback()
        await _refuse(intake.publisher, rejection(caller, exc.reason, exc.detail, raw, envelope))
        raise
    submission = await _produce(session, intake.publisher, envelope)
    intake.room.accepted(envelope.routing.recipients)
    return submission


async def _same_again(session: AsyncSession, envelope: ParsedEnvelope) -> Submission | None:
    """A client whose answer was lost may post the very same bytes again and get the same 202; any other
    envelope reusing a notice id is refused. One query for both tables: this runs on every POST."""
    notice_id = str(envelope.routing.notice_id)
    earlier = select(Submission.envelope_sha256).where(Submission.notice_id == notice_id)
    ingested = select(NoticeRow.envelope_sha256).where(NoticeRow.notice_id == notice_id)
    submitted_sha, stored_sha = (
        await session.execute(select(earlier.scalar_subquery(), ingested.scalar_subquery()))
    ).one()
    if submitted_sha == envelope.sha256:
        return await session.get(Submission, notice_id)
    if submitted_sha is None and stored_sha == envelope.sha256:
        return await _record_lost_submission(session, envelope)
    if submitted_sha is not None or stored_sha is not None:
        raise EnvelopeError("duplicate_notice", f"notice id {notice_id} was already used; choose a new id")
    return None


async def _record_lost_submission(session: AsyncSession, envelope: ParsedEnvelope) -> Submission:
    """Kafka acknowledged an earlier post of these very bytes and ingest stored them, but the gateway
    died (or the database went away) before recording the submission, so that client never saw its 202.
    The record is written now from where ingest found the envelope, and the client gets its 202."""
    notice_id = str(envelope.routing.notice_id)
    stored = await session.get_one(NoticeRow, notice_id)
    submission = _submission(envelope, stored.kafka_partition, stored.kafka_offset, stored.ingested_at)
    session.add(submission)
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()  # a concurrent re-post recorded it first: the same answer
        return await session.get_one(Submission, notice_id)
    return submission


def _submission(envelope: ParsedEnvelope, partition: int, offset: int, at: datetime) -> Submission:
    """The gateway's record of an envelope Kafka holds at (partition, offset)."""
    routing = envelope.routing
    return Submission(
        notice_id=str(routing.notice_id),
        sender=routing.sender,
        case_ref=routing.case_ref,
        recipients=json.dumps(routing.recipients),
        envelope_sha256=envelope.sha256,
        kafka_partition=partition,
        kafka_offset=offset,
        submitted_at=at,
    )


async def _produce(session: AsyncSession, publisher: EventPublisher, envelope: ParsedEnvelope) -> Submission:
    routing = envelope.routing
    notice_id = str(routing.notice_id)
    partition, offset = await publisher.send(
        publisher.topics.notices,
        routing.case_ref,
        envelope.raw,
        cloud_headers("org.deskbridge.notice.submitted", notice_id, f"{SOURCE}/{routing.sender}"),
    )
    submission = _submission(envelope, partition, offset, utcnow())
    session.add(submission)
    try:
        await session.commit()
    except IntegrityError as exc:
        # A concurrent request with the same id won the race; ingest drops the second envelope as a replay.
        await session.rollback()
        raise EnvelopeError(
            "duplicate_notice", f"notice id {notice_id} was already used; choose a new id"
        ) from exc
    return submission


async def seal_for_desk(intake: Intake, desk: AgencyKeys, draft: NoticeDraft) -> Submission:
    """The desk's path: the gateway holds the desk's keys, seals, then admits like any other envelope."""
    if desk.agency in draft.recipients:
        raise DirectoryError(422, "the desk cannot address a notice to itself")
    recipients = await encryption_keys(intake.session, draft.recipients)
    notice = Notice(**draft.model_dump(), sender=desk.agency, sent_at=utcnow())
    envelope = seal_notice(notice, desk.signer(), recipients)
    return await accept_envelope(intake, envelope, desk.agency)
