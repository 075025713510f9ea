"""Single statements without a transaction: the same Core statements give the same answers on asyncpg
directly (PostgreSQL) and through SQLAlchemy (SQLite), a unique violation is SQLAlchemy's IntegrityError
either way, each write is committed on its own, and a connection PostgreSQL dropped is replaced."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

import pytest
from sqlalchemy import Executable, bindparam, func, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.notices.models import Submission
from services.notices.service import EARLIER, EARLIER_EACH
from services.platform.database import Autocommit
from services.platform.errors import DatabaseUnavailable

AT = datetime(2026, 12, 1, 12, 0, 30, 123456, tzinfo=UTC)
COLUMNS = tuple(column.key for column in Submission.__table__.columns)
RECORD = insert(Submission).values({name: bindparam(name) for name in COLUMNS})
BOTH = select(
    select(Submission.sender).where(Submission.notice_id == bindparam("id")).scalar_subquery(),
    select(Submission.submitted_at).where(Submission.notice_id == bindparam("id")).scalar_subquery(),
)


def _row(notice_id: str) -> dict[str, object]:
    return {
        "notice_id": notice_id,
        "sender": "kh-cnp",
        "case_ref": "KR-2026-0001",
        "recipients": '["kr-desk"]',
        "envelope_sha256": "ab" * 32,
        "kafka_partition": 2,
        "kafka_offset": 2**40,
        "submitted_at": AT,
    }


async def test_statements_answer_alike_and_each_write_commits_on_its_own(engine: AsyncEngine) -> None:
    database = Autocommit(engine)
    try:
        assert await database.first(BOTH, {"id": "n-1"}) == (None, None)
        await database.run(RECORD, _row("n-1"))
        # A parameter used twice is bound once; times come back aware, in UTC, to the microsecond.
        assert tuple(await database.first(BOTH, {"id": "n-1"}) or ()) == ("kh-cnp", AT)
        with pytest.raises(IntegrityError):
            await database.run(RECORD, _row("n-1"))
        # Committed without any commit call: another connection of the engine sees the row.
        async with engine.connect() as connection:
            count = await connection.scalar(text("SELECT count(*) FROM submissions"))
            offset = await connection.scalar(select(Submission.kafka_offset))
        assert (count, offset) == (1, 2**40)
        assert (
            await database.first(select(Submission.sender).where(Submission.sender == "nobody"), {}) is None
        )
        await database.run(RECORD, _row("n-2"))
        senders = select(Submission.notice_id, Submission.sender).order_by(Submission.notice_id)
        rows = await database.all(senders, {})
        assert [tuple(row) for row in rows] == [("n-1", "kh-cnp"), ("n-2", "kh-cnp")]
        assert await database.all(senders.where(Submission.sender == "nobody"), {}) == []
    finally:
        await database.close()


PID = select(text("pg_backend_pid()"))
SLOW_PID = select(text("pg_backend_pid()"), func.pg_sleep(0.2))


async def _pid(database: Autocommit, statement: Executable = PID) -> int:
    row = await database.first(statement, {})
    assert row is not None
    return int(row[0])


async def test_a_connection_postgresql_dropped_is_replaced(engine: AsyncEngine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no server to drop a connection")
    database = Autocommit(engine, pool_size=1)
    try:
        pid = await _pid(database)
        async with engine.connect() as connection:
            await connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        # The first statement after it may find the connection dead before the pool noticed: that is an
        # outage (503, or a retried batch), and the connection is not handed out again.
        with contextlib.suppress(DatabaseUnavailable):
            await database.first(select(text("1")), {})
        assert await _pid(database) != pid
    finally:
        await database.close()


async def test_rows_run_together_are_each_written_once_and_only_a_duplicate_is_refused(
    engine: AsyncEngine,
) -> None:
    database = Autocommit(engine)
    try:
        await database.run(RECORD, _row("taken"))
        ids = [f"n-{i}" for i in range(20)]
        ids[13] = "taken"  # lands in a group with others: that group is refused whole, then row by row
        outcomes = await asyncio.gather(
            *(database.run_together(RECORD, _row(i)) for i in ids), return_exceptions=True
        )
        refused = [i for i, outcome in zip(ids, outcomes, strict=True) if outcome is not None]
        assert refused == ["taken"] and isinstance(outcomes[13], IntegrityError)
        async with engine.connect() as connection:
            stored = (await connection.execute(select(Submission.notice_id))).scalars().all()
        assert sorted(stored) == sorted(ids)  # each once: "taken" from before, the rest from the groups
        # A caller that gives up while its row waits leaves the others' rows, and its own, written.
        waiting = [asyncio.create_task(database.run_together(RECORD, _row(f"m-{i}"))) for i in range(5)]
        await asyncio.sleep(0)
        waiting[3].cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        async with engine.connect() as connection:
            later = await connection.scalar(
                text("SELECT count(*) FROM submissions WHERE notice_id LIKE 'm-%'")
            )
        assert later in (4, 5)  # the cancelled row is written if its group was already out
        assert all(task.exception() is None for i, task in enumerate(waiting) if i != 3)
    finally:
        await database.close()


async def test_a_shared_read_starts_after_every_caller_it_answers(engine: AsyncEngine) -> None:
    """The directory's generation is read this way: a caller must never be handed a read that began
    before it called (a revocation committed in between would be missed), yet callers share reads."""
    if engine.dialect.name != "postgresql":
        pytest.skip("a read slow enough to overlap needs pg_sleep")
    async with engine.begin() as connection:
        await connection.execute(text("CREATE SEQUENCE reads"))
    slow = select(func.nextval("reads"), func.pg_sleep(0.3))  # each read takes the next number
    database = Autocommit(engine)
    try:
        first = asyncio.create_task(database.first_shared(slow))
        await asyncio.sleep(0.1)  # its read is out
        later = [asyncio.create_task(database.first_shared(slow)) for _ in range(3)]
        rows = [await task for task in (first, *later)]
        assert [row[0] if row is not None else None for row in rows] == [1, 2, 2, 2]
    finally:
        await database.close()


async def test_statements_built_per_call_answer_right_and_are_not_remembered_forever(
    engine: AsyncEngine,
) -> None:
    database = Autocommit(engine)
    try:
        await database.run(RECORD, _row("n-1"))
        for n in range(300):  # each a new statement object, its literal a parameter of its own
            query = select(Submission.kafka_partition + n).where(Submission.notice_id == "n-1")
            assert tuple(await database.first(query, {}) or ()) == (2 + n,)
        assert len(database._compiled) <= 256
    finally:
        await database.close()


async def test_reads_together_answer_each_caller_its_own_key(engine: AsyncEngine) -> None:
    """The duplicate check of every POST is read this way: callers that arrive together share a statement,
    each answered for its own notice id (a repeated id, an unknown one), as if each had read alone."""
    database = Autocommit(engine)
    try:
        await database.run(RECORD, _row("n-1"))
        await database.run(RECORD, {**_row("n-2"), "envelope_sha256": "cd" * 32})
        asked = ["n-1", "unknown", "n-2", "n-1"]
        rows = await asyncio.gather(
            *(database.first_together(EARLIER, {"id": i}, EARLIER_EACH) for i in asked)
        )
        answers = [tuple(row) if row is not None else None for row in rows]
        assert answers == [("ab" * 32, None), (None, None), ("cd" * 32, None), ("ab" * 32, None)]
        alone = [await database.first_together(EARLIER, {"id": i}, EARLIER_EACH) for i in asked]
        assert [tuple(row) if row is not None else None for row in alone] == answers
    finally:
        await database.close()


async def test_reads_together_start_after_every_caller_they_answer(engine: AsyncEngine) -> None:
    """A caller arriving while a read is out waits for the next one, with the others that arrived meanwhile,
    never for the read already out (it could miss a row committed just before the caller asked)."""
    if engine.dialect.name != "postgresql":
        pytest.skip("a read slow enough to overlap needs pg_sleep")
    async with engine.begin() as connection:
        await connection.execute(text("CREATE SEQUENCE keyed_reads"))
    each = text(  # each read takes the next number once, whatever the keys asked
        "SELECT asked.id, (SELECT nextval('keyed_reads')), (SELECT pg_sleep(0.3)) "
        "FROM unnest(CAST(:id AS text[])) AS asked(id)"
    )
    single = select(func.nextval("keyed_reads"), func.pg_sleep(0.3))  # on PostgreSQL only `each` runs
    database = Autocommit(engine)
    try:
        first = asyncio.create_task(database.first_together(single, {"id": "a"}, each))
        await asyncio.sleep(0.1)  # its read is out
        later = [asyncio.create_task(database.first_together(single, {"id": k}, each)) for k in "bcb"]
        rows = [await task for task in (first, *later)]
        assert [row[0] if row is not None else None for row in rows] == [1, 2, 2, 2]
    finally:
        await database.close()


async def test_statements_share_at_most_the_connections_allowed_and_each_waits_its_turn(
    engine: AsyncEngine,
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("Autocommit keeps connections of its own on PostgreSQL only")
    database = Autocommit(engine, pool_size=2)
    try:
        pids = await asyncio.gather(*(_pid(database, SLOW_PID) for _ in range(6)))
        assert len(set(pids)) == 2  # six statements, two connections: four waited for one
        # The connection used last is used next (its statement cache is warm), again and again.
        assert len({await _pid(database) for _ in range(5)}) == 1
    finally:
        await database.close()


async def test_a_refused_statement_keeps_its_connection_and_a_cancelled_one_does_not(
    engine: AsyncEngine,
) -> None:
    """A statement PostgreSQL refused leaves its connection sound. One whose caller gave up while its
    answer was on the way may still get that answer: that connection is closed, never handed on."""
    if engine.dialect.name != "postgresql":
        pytest.skip("Autocommit keeps connections of its own on PostgreSQL only")
    database = Autocommit(engine, pool_size=1)
    try:
        await database.run(RECORD, _row("n-1"))
        before = await _pid(database)
        with pytest.raises(IntegrityError):
            await database.run(RECORD, _row("n-1"))
        assert await _pid(database) == before
        slow = asyncio.create_task(database.first(select(func.pg_sleep(5)), {}))
        await asyncio.sleep(0.3)  # its statement is out
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        after = await asyncio.wait_for(_pid(database), 3)  # not the 5 s the cancelled sleep had left
        assert after != before
        assert tuple(await database.first(BOTH, {"id": "n-1"}) or ()) == ("kh-cnp", AT)
    finally:
        await database.close()


async def test_a_caller_that_gives_up_waiting_for_a_connection_takes_no_turn(engine: AsyncEngine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("Autocommit keeps connections of its own on PostgreSQL only")
    database = Autocommit(engine, pool_size=1)
    try:
        busy = asyncio.create_task(_pid(database, SLOW_PID))
        await asyncio.sleep(0.05)
        waiting = [asyncio.create_task(_pid(database)) for _ in range(3)]
        await asyncio.sleep(0.05)
        waiting[0].cancel()  # gives up while waiting: the two behind it still get their turn
        pids = {await busy, *[await task for task in waiting[1:]]}
        assert len(pids) == 1
        assert waiting[0].cancelled()
        closing = asyncio.create_task(_pid(database, SLOW_PID))
        await asyncio.sleep(0.05)
        late = asyncio.create_task(_pid(database))
        await asyncio.sleep(0.05)
        await database.close()  # a caller still waiting is told the database is gone, not left hanging
        with pytest.raises(DatabaseUnavailable):
            await asyncio.wait_for(late, 3)
        assert await closing in pids  # the statement already out is answered
    finally:
        await database.close()
