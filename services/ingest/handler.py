"""Ingest's handler for notices.v1: verify, route, write each inbox row once, dead-letter the bad."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import structlog
from aiokafka import ConsumerRecord
from opentelemetry.context import Context
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas.events import Event, EventType
from schemas.notices import RecallRequest
from services.delivery.deadlines import DEFAULT_SLA, Sla
from services.delivery.service import Materialised, RecordRef, materialise, materialise_many
from services.envelope.errors import EnvelopeError
from services.envelope.service import Freshness, ParsedEnvelope, parse_envelope
from services.metrics.registry import Metrics
from services.notices.admission import admit
from services.notices.errors import RecallRefused
from services.notices.service import RECALL_TYPE, apply_recall
from services.platform import tracing
from services.platform.consumer import Batch
from services.platform.errors import Error
from services.platform.kafka import (
    DLQ_DETAIL,
    DLQ_OFFSET,
    DLQ_PARTITION,
    DLQ_REASON,
    DLQ_TOPIC,
    EventPublisher,
    ce_type,
    cloud_headers,
    header_value,
    record_time,
)
from services.platform.outage import TRANSIENT
from services.trust.keyring import DirectoryCache, DirectoryView

log = structlog.get_logger("ingest")
SOURCE = "deskbridge/ingest"
Announced = list[tuple[Event, Context]]  # events, each with the trace context of the record it is about
# A notice whose inbox rows this batch wrote: its priority and its record's broker timestamp (ms).
Arrival = tuple[str, int]
# A record refused, with its reason and detail: dead-lettered once the batch is durable, not before, since
# a batch that fails (the database goes away) is handled again whole and would dead-letter it twice.
Refused = list[tuple[ConsumerRecord[bytes, bytes], str, str]]


@dataclass
class NoticeHandler:
    """Commit policy: the inbox rows are committed to the database, then the refused records are
    dead-lettered and the delivery events sent, then the caller commits the offset. A crash in between
    redelivers the record; materialise() sees the same envelope already stored and only re-sends the
    (idempotent) events. A batch that fails before its commit dead-letters nothing: it is handled again
    whole, and each record it refuses is dead-lettered once."""

    sessions: async_sessionmaker[AsyncSession]
    publisher: EventPublisher
    freshness: Freshness
    sla: Sla = DEFAULT_SLA
    one_transaction_per_batch: bool = False  # PostgreSQL: savepoints per record, one commit per batch
    directory: DirectoryCache = field(default_factory=DirectoryCache)
    metrics: Metrics = field(default_factory=Metrics)

    async def __call__(self, records: Batch) -> None:
        # The batch's rows commit before its dead letters and events go out, and all before the caller
        # commits the offsets: a crash in between redelivers, and the same rows and event ids are recognised.
        # The directory is read as of the batch's start: a key revoked later refuses the next batch.
        # Each record's work, and what it sends, continues its trace (the consume loop's spans).
        events: Announced = []
        arrived: list[Arrival] = []
        refused: Refused = []
        if self.one_transaction_per_batch:
            async with self.sessions() as session:
                directory = await self.directory.view(session)
                events = await self._batch(records, directory, session, arrived, refused)
                await session.commit()
            self._timed(arrived)
        else:
            async with self.sessions() as session:
                directory = await self.directory.view(session)
            for record in records:
                events += await self.handle(record, directory, arrived, refused)
                self._timed(arrived)  # each record's rows commit on their own
        for record, reason, detail in refused:
            with tracing.within(record):
                await self.dead_letter(record, reason, detail)
        await self.publisher.publish_traced(events, SOURCE)

    def _timed(self, arrived: list[Arrival]) -> None:
        """Times the notices whose rows are now committed (POST-to-inbox latency)."""
        for priority, appended_ms in arrived:
            self.metrics.reached_inbox(priority, appended_ms)
        arrived.clear()

    async def _batch(
        self,
        records: Batch,
        directory: DirectoryView,
        session: AsyncSession,
        arrived: list[Arrival],
        refused: Refused,
    ) -> Announced:
        """The batch in Kafka order. Plain notices (the bulk of traffic) are verified one by one and then
        written together; a recall, reply or forward first writes the run before it, since it may refer
        to a notice in that run, and then goes alone in a savepoint of its own."""
        events: Announced = []
        run: list[tuple[ConsumerRecord[bytes, bytes], ParsedEnvelope]] = []
        first = True  # nothing written yet in the batch's transaction
        for record in records:
            if header_value(list(record.headers), "ce_type") != RECALL_TYPE:
                with tracing.within(record):
                    try:
                        envelope = _parsed(record)
                        if envelope.routing.in_reply_to is None and envelope.routing.forwarded_from is None:
                            await admit(session, directory, envelope, record_time(record), self.freshness)
                            run.append((record, envelope))
                            continue
                    except TRANSIENT:
                        raise
                    except Exception as exc:  # a poison record must never stop the partition
                        _refuse(record, exc, refused)
                        continue
            events += await self._write(run, directory, session, arrived, refused, first)
            first, run = False, []
            events += await self.handle(record, directory, arrived, refused, session)
        return events + await self._write(run, directory, session, arrived, refused, first)

    async def _write(
        self,
        run: list[tuple[ConsumerRecord[bytes, bytes], ParsedEnvelope]],
        directory: DirectoryView,
        session: AsyncSession,
        arrived: list[Arrival],
        refused: Refused,
        first: bool,
    ) -> Announced:
        """Writes a run together. The batch's first writes need no savepoint (two round trips): were they
        refused, rolling back the whole transaction undoes only them."""
        if not run:
            return []
        admitted = [(envelope, _ref(record)) for record, envelope in run]
        try:
            if first:
                outcomes = await materialise_many(session, admitted, self.sla)
            else:
                async with session.begin_nested():
                    outcomes = await materialise_many(session, admitted, self.sla)
        except IntegrityError:
            # Another consumer stored one of these notice ids meanwhile: one at a time, which looks again.
            if first:
                await session.rollback()
            events: Announced = []
            for record, _ in run:
                events += await self.handle(record, directory, arrived, refused, session)
            return events
        events = []
        for (record, envelope), outcome in zip(run, outcomes, strict=True):
            with tracing.within(record):
                if isinstance(outcome, EnvelopeError):
                    refused.append((record, outcome.code, outcome.detail))
                else:
                    events += tracing.in_current_context(_delivered(record, envelope, outcome, arrived))
        return events

    async def handle(
        self,
        record: ConsumerRecord[bytes, bytes],
        directory: DirectoryView,
        arrived: list[Arrival],
        refused: Refused,
        shared: AsyncSession | None = None,
    ) -> Announced:
        """Routes one record; returns the events its delivery announces (none for a refused record) and
        adds a notice it wrote to `arrived`, a record it refuses to `refused`. With a `shared` session its
        writes go in a savepoint of the batch's transaction."""
        with tracing.within(record):
            try:
                if header_value(list(record.headers), "ce_type") == RECALL_TYPE:
                    events = await self._recall(record, shared)
                else:
                    events = await self._route(record, directory, arrived, shared)
            except TRANSIENT:
                raise
            except Exception as exc:  # a poison record must never stop the partition
                _refuse(record, exc, refused)
                return []
            return tracing.in_current_context(events)

    @asynccontextmanager
    async def _unit(self, shared: AsyncSession | None) -> AsyncIterator[AsyncSession]:
        """One record's writes: a savepoint of the batch's transaction, or a transaction of its own."""
        if shared is not None:
            async with shared.begin_nested():
                yield shared
            return
        async with self.sessions() as session:
            yield session
            await session.commit()

    async def _route(
        self,
        record: ConsumerRecord[bytes, bytes],
        directory: DirectoryView,
        arrived: list[Arrival],
        shared: AsyncSession | None,
    ) -> list[Event]:
        envelope = _parsed(record)
        for attempt in range(2):
            try:
                async with self._unit(shared) as session:
                    await admit(session, directory, envelope, record_time(record), self.freshness)
                    outcome = await materialise(session, envelope, _ref(record), self.sla)
                return _delivered(record, envelope, outcome, arrived)
            except IntegrityError:
                # Another consumer stored the same notice id between our read and write: look again.
                if attempt == 1:
                    raise
        raise AssertionError("unreachable")

    async def _recall(self, record: ConsumerRecord[bytes, bytes], shared: AsyncSession | None) -> list[Event]:
        try:
            request = RecallRequest.model_validate_json(record.value or b"")
        except ValidationError as exc:
            raise RecallRefused(f"not a recall request: {exc.errors()[0]['msg']}") from exc
        async with self._unit(shared) as session:
            return await apply_recall(session, request)

    async def dead_letter(self, record: ConsumerRecord[bytes, bytes], reason: str, detail: str) -> None:
        log.warning(
            "dead-lettered",
            reason=reason,
            detail=detail,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
        )
        coords = f"{record.topic}:{record.partition}:{record.offset}"
        headers = [
            *cloud_headers(ce_type(EventType.notice_rejected), f"dlq:{coords}", SOURCE),
            (DLQ_REASON, reason.encode()),
            (DLQ_DETAIL, detail.encode()[:1000]),
            (DLQ_TOPIC, record.topic.encode()),
            (DLQ_PARTITION, str(record.partition).encode()),
            (DLQ_OFFSET, str(record.offset).encode()),
        ]
        key = record.key.decode(errors="replace") if record.key else "unkeyed"
        await self.publisher.send(self.publisher.topics.dead_letters, key, record.value or b"", headers)
        self.metrics.dead_lettered(
            reason, notice=header_value(list(record.headers), "ce_type") != RECALL_TYPE
        )


def _refuse(record: ConsumerRecord[bytes, bytes], exc: Exception, refused: Refused) -> None:
    """Adds the record to `refused` with the reason `exc` gives; called while `exc` is being handled."""
    if isinstance(exc, Error):
        refused.append((record, exc.code, exc.detail))
    else:
        log.exception("unexpected failure on a record", topic=record.topic, offset=record.offset)
        refused.append((record, "internal_error", type(exc).__name__))


def _delivered(
    record: ConsumerRecord[bytes, bytes],
    envelope: ParsedEnvelope,
    outcome: Materialised,
    arrived: list[Arrival],
) -> list[Event]:
    if outcome.written:
        arrived.append((envelope.routing.priority.value, record.timestamp))
    return outcome.events


def _ref(record: ConsumerRecord[bytes, bytes]) -> RecordRef:
    return RecordRef(record.topic, record.partition, record.offset, tracing.record_traceparent(record))


def _parsed(record: ConsumerRecord[bytes, bytes]) -> ParsedEnvelope:
    if not record.value:
        raise EnvelopeError("malformed", "empty record")
    return parse_envelope(record.value)
