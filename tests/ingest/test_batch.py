"""Ingest's batch path on PostgreSQL without Kafka: a run that meets a notice another consumer stored
meanwhile is refused as a whole and goes one at a time, writing each inbox row once; a batch the database
fails is handled again whole and dead-letters each refused record once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

import pytest
from aiokafka import ConsumerRecord
from opentelemetry.context import Context
from sqlalchemy import func, select

from schemas.events import Event, EventType, fact_id
from services.delivery.models import Delivery, NoticeRow
from services.delivery.service import RecordRef, materialise, materialise_many
from services.envelope.service import Freshness, parse_envelope
from services.ingest import handler as ingest_handler
from services.ingest.handler import NoticeHandler
from services.notices.service import RECALL_TYPE
from services.platform.database import make_engine, make_sessionmaker
from services.platform.errors import DatabaseUnavailable
from services.platform.kafka import DLQ_REASON, EventPublisher, KafkaAccess, Topics, header_value
from tests.delivery.test_service import _directory, _envelope


class Announcer(EventPublisher):
    """Keeps what ingest would send instead of sending it."""

    def __init__(self) -> None:
        super().__init__(KafkaAccess("unused:9092"), "tests", Topics(), 1.0)
        self.events: list[Event] = []
        self.dead_letters: list[str | None] = []

    async def publish_traced(self, events: Sequence[tuple[Event, Context]], source: str) -> None:
        self.events += [event for event, _ in events]

    async def send(
        self, topic: str, key: str, value: bytes, headers: list[tuple[str, bytes]]
    ) -> tuple[int, int]:
        self.dead_letters.append(header_value(headers, DLQ_REASON))
        return 0, 0


def _record(offset: int, value: bytes, ce_type: str | None = None) -> ConsumerRecord[bytes, bytes]:
    headers = [("ce_type", ce_type.encode())] if ce_type else []
    now_ms = int(time.time() * 1000)
    return ConsumerRecord("notices.v1", 0, offset, now_ms, 1, b"KD", value, None, 2, len(value), headers)


@pytest.mark.parametrize("after_a_recall", [False, True], ids=["first-write", "in-a-savepoint"])
async def test_a_run_meeting_a_notice_stored_meanwhile_goes_one_at_a_time(
    stack_db: str, after_a_recall: bool
) -> None:
    """The other consumer holds the inbox lock with the notice written but not committed: this batch's
    read misses it, its insert then collides, and each record is handled again on its own: the stored
    one is recognised (no rows, the same events), the other written. First in the batch's transaction
    the run had no savepoint (the transaction is rolled back); after a recall it had one."""
    engine = make_engine(stack_db)
    sessions = make_sessionmaker(engine)
    try:
        keys = await _directory(engine)
        stored, fresh = _envelope(keys), _envelope(keys)
        records = [_record(1, stored), _record(2, fresh)]
        if after_a_recall:
            records.insert(0, _record(0, b"not a recall", RECALL_TYPE))
        announcer = Announcer()
        handler = NoticeHandler(sessions, announcer, Freshness.of(300, 30), one_transaction_per_batch=True)
        async with sessions() as other:
            await materialise(other, parse_envelope(stored), RecordRef("notices.v1", 0, 1))
            batch = asyncio.create_task(handler(records))
            await asyncio.sleep(1.5)  # the batch has read, and waits for the inbox lock
            assert not batch.done()
            await other.commit()
        await asyncio.wait_for(batch, 15)

        assert announcer.dead_letters == (["recall_refused"] if after_a_recall else [])
        ids = [str(parse_envelope(e).routing.notice_id) for e in (stored, fresh)]
        assert [e.event_id for e in announcer.events] == [
            fact_id(EventType.notice_delivered, notice_id, r)
            for notice_id in ids
            for r in ("kh-cnp", "aseanapol")
        ]
        async with sessions() as session:
            per_notice = dict(
                (
                    await session.execute(
                        select(Delivery.notice_id, func.count()).group_by(Delivery.notice_id)
                    )
                ).all()
            )
            assert per_notice == {ids[0]: 2, ids[1]: 2}
            assert (await session.execute(select(func.count()).select_from(NoticeRow))).scalar_one() == 2
    finally:
        await engine.dispose()


@pytest.mark.parametrize("batched", [True, False], ids=["one-transaction", "per-record"])
async def test_a_batch_the_database_fails_dead_letters_its_refused_records_once(
    stack_db: str, batched: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database goes away after a poison record was refused and before the batch's rows are written:
    the consume loop hands the same batch in again once it is back. The poison record is dead-lettered
    once, after the rows are durable, not once per attempt (the fault scenarios found it twice)."""
    engine = make_engine(stack_db)
    sessions = make_sessionmaker(engine)
    try:
        keys = await _directory(engine)
        envelope = _envelope(keys)
        records = [_record(1, b"not json"), _record(2, envelope)]
        announcer = Announcer()
        handler = NoticeHandler(sessions, announcer, Freshness.of(300, 30), one_transaction_per_batch=batched)
        failures = [DatabaseUnavailable("the database went away")]

        async def flaky(write: Callable[..., Awaitable[object]], *args: object, **kwargs: object) -> object:
            if failures:
                raise failures.pop()
            return await write(*args, **kwargs)

        real_one, real_many = ingest_handler.materialise, materialise_many
        monkeypatch.setattr(ingest_handler, "materialise", lambda *a, **k: flaky(real_one, *a, **k))
        monkeypatch.setattr(ingest_handler, "materialise_many", lambda *a, **k: flaky(real_many, *a, **k))
        with pytest.raises(DatabaseUnavailable):
            await handler(records)
        assert announcer.dead_letters == [] and announcer.events == []  # nothing sent for a failed batch
        await handler(records)  # as the consume loop retries it

        assert announcer.dead_letters == ["malformed"]
        notice_id = str(parse_envelope(envelope).routing.notice_id)
        assert [e.event_id for e in announcer.events] == [
            fact_id(EventType.notice_delivered, notice_id, r) for r in ("kh-cnp", "aseanapol")
        ]
    finally:
        await engine.dispose()
