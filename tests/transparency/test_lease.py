"""The checkpoint lease (services/transparency/lease.py) on both databases: of two replicas on one
database only the holder signs; the other takes over within a term once the holder stops renewing; and
an ex-holder that still believes it holds the lease is refused by the database inside its signing
transaction (fencing); and a second audit service next to the running one stands by."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from schemas.events import Event, EventType
from services.audit.app import create_app as create_audit_app
from services.platform.database import make_sessionmaker
from services.transparency.checkpoints import AuditorQueries, Publisher, generate_log_key
from services.transparency.lease import Lease, NotLeaseHolder
from services.transparency.models import TlogCheckpoint
from services.transparency.note import NoteSigner
from services.transparency.service import append
from tests.conftest import Stack, eventually

TERM = timedelta(seconds=1)


def _event(n: int) -> Event:
    return Event(
        event_id=f"lease-{n}",
        type=EventType.notice_delivered,
        occurred_at=datetime(2025, 3, 31, 9, n % 60, tzinfo=UTC),
        actor="ingest",
        agency="kh-cnp",
        notice_id=uuid.UUID(int=n),
        details={"n": n},
    )


async def _grow(sessions: async_sessionmaker[AsyncSession], n: int) -> None:
    async with sessions() as session:
        await append(session, [_event(n)])
        await session.commit()


async def _replica(sessions: async_sessionmaker[AsyncSession], signer: NoteSigner) -> Publisher:
    publisher = Publisher(sessions, signer, AuditorQueries(timedelta(hours=1)), Lease(sessions, TERM))
    await publisher.start()
    return publisher


async def _signed(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        return int((await session.execute(select(func.count()).select_from(TlogCheckpoint))).scalar_one())


@pytest.fixture
def signer(tmp_path: Path) -> NoteSigner:
    return generate_log_key(tmp_path / "log.jwk.json", "deskbridge.test/audit-log")


async def test_only_the_holder_signs(engine: AsyncEngine, signer: NoteSigner) -> None:
    sessions = make_sessionmaker(engine)
    a, b = await _replica(sessions, signer), await _replica(sessions, signer)
    assert a.lease and b.lease
    taken = await asyncio.gather(a.lease.tick(), b.lease.tick())
    assert sorted(taken) == [False, True]  # exactly one took the free lease
    holder, standby = (a, b) if a.lease.held else (b, a)
    assert holder.lease and standby.lease
    assert holder.lease.status()["role"] == "active" and standby.lease.status()["role"] == "standby"
    assert standby.lease.status()["holder"] == holder.lease.holder
    for n in range(1, 6):
        await _grow(sessions, n)
        await asyncio.gather(holder.lease.tick(), standby.lease.tick())  # renewals never move it
        assert await holder.publish() is not None
        with pytest.raises(NotLeaseHolder) as refused:
            await standby.publish()
        assert refused.value.code == "checkpoint_standby" and refused.value.retry_after_s
    assert await _signed(sessions) == 5
    assert holder.lease.held and not standby.lease.held


async def test_the_standby_takes_over_within_a_term(engine: AsyncEngine, signer: NoteSigner) -> None:
    sessions = make_sessionmaker(engine)
    a, b = await _replica(sessions, signer), await _replica(sessions, signer)
    assert a.lease and b.lease
    assert await a.lease.tick()
    await _grow(sessions, 1)
    assert await a.publish() is not None
    await _grow(sessions, 2)
    stop = asyncio.Event()
    keeping = asyncio.create_task(b.lease.keep(stop, b.publish_on_takeover))
    died = time.monotonic()  # `a` renews no more, as if SIGKILLed
    try:
        while not b.lease.held:
            assert time.monotonic() - died < 2 * TERM.total_seconds(), "no takeover within the term"
            await asyncio.sleep(0.05)
        took = time.monotonic() - died
        assert took <= TERM.total_seconds() + TERM.total_seconds() / 3 + 0.5
        for _ in range(40):  # the new holder signs at once, without waiting for its interval
            if await _signed(sessions) == 2:
                break
            await asyncio.sleep(0.05)
        assert await _signed(sessions) == 2
        assert b.lease.seen and b.lease.seen.epoch == 2 and b.lease.seen.holder == b.lease.holder
    finally:
        stop.set()
        await keeping
    # A clean stop releases the lease: the next replica takes it without waiting out the term.
    await b.lease.release()
    c = await _replica(sessions, signer)
    assert c.lease and await c.lease.tick()


async def test_a_fenced_ex_holder_cannot_sign(engine: AsyncEngine, signer: NoteSigner) -> None:
    sessions = make_sessionmaker(engine)
    a, b = await _replica(sessions, signer), await _replica(sessions, signer)
    assert a.lease and b.lease
    assert await a.lease.tick()
    await _grow(sessions, 1)
    await asyncio.sleep(TERM.total_seconds() + 0.1)  # `a` paused past its term
    assert await b.lease.tick()
    # `a` wakes up believing it still holds the lease: the database refuses inside the transaction.
    a.lease._valid_until = float("inf")
    with pytest.raises(NotLeaseHolder):
        await a.publish()
    assert not a.lease.held and await _signed(sessions) == 0
    assert not await a.lease.tick()  # and it cannot renew its way back while `b` holds it
    assert await b.publish() is not None and await _signed(sessions) == 1


async def test_a_second_audit_service_stands_by_and_serves_reads(stack: Stack) -> None:
    """The running audit service takes the lease; a second one on the same database stands by: its
    /healthz names the holder, it refuses to sign (503 with Retry-After) and serves reads."""
    first = stack.client(None, audit=True)

    async def active() -> dict[str, Any] | None:
        lease: dict[str, Any] = (await first.get("/healthz")).json()["checkpoints"]
        return lease if lease["role"] == "active" else None

    holder = await eventually(active, within=10)
    second = create_audit_app(stack.settings)
    async with (
        second.router.lifespan_context(second),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=second),
            base_url="http://audit-2",
            headers={"Authorization": f"Bearer {stack.token('auditor')}"},
        ) as client,
    ):

        async def seen() -> dict[str, Any] | None:
            lease: dict[str, Any] = (await client.get("/healthz")).json()["checkpoints"]
            return lease if lease["holder"] is not None else None

        lease = await eventually(seen, within=10)  # once its first tick has read the lease
        assert lease["role"] == "standby" and lease["holder"] == holder["replica"] != lease["replica"]
        refused = await client.post("/v1/audit/checkpoints")
        assert refused.status_code == 503 and refused.json()["code"] == "checkpoint_standby"
        assert refused.headers["retry-after"]
        assert (await client.get("/v1/audit/events")).status_code == 200
    assert (await active()) is not None  # the standby's stop took nothing from the holder
