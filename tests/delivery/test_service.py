"""Routing on both databases: inbox rows written exactly once, replays refused, cursors in order."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.notices import Notice
from services.delivery.errors import DeliveryError
from services.delivery.models import Delivery
from services.delivery.service import (
    Materialised,
    RecordRef,
    decode_cursor,
    encode_cursor,
    inbox,
    materialise,
    materialise_many,
)
from services.envelope.errors import EnvelopeError
from services.envelope.keys import AgencyKeys, PublicKey
from services.envelope.service import Freshness, parse_envelope, seal_notice
from services.notices.admission import admit
from services.platform.database import make_sessionmaker
from services.trust.keyring import DirectoryCache
from services.trust.service import register_agency, register_key

REF = RecordRef("notices.v1", 0, 0)
FRESH = Freshness.of(300, 30)


async def _directory(engine: AsyncEngine) -> dict[str, AgencyKeys]:
    keys = {a: AgencyKeys.generate(a) for a in ("kr-desk", "kh-cnp", "aseanapol")}
    async with make_sessionmaker(engine)() as session:
        for agency, own in keys.items():
            await register_agency(session, agency, agency, "desk" if agency == "kr-desk" else "partner", "t")
            await session.flush()
            for jwk in own.public_jwks():
                await register_key(session, agency, jwk, "t")
        await session.commit()
    return keys


def _envelope(
    keys: dict[str, AgencyKeys],
    notice_id: uuid.UUID | None = None,
    summary: str = "s",
    in_reply_to: uuid.UUID | None = None,
) -> bytes:
    notice = Notice(
        notice_id=notice_id or uuid.uuid4(),
        type="scam_compound",
        priority="immediate",
        tlp="red",
        case_ref="KD-2025-0331",
        recipients=["kh-cnp", "aseanapol"],
        summary=summary,
        sender="kr-desk",
        sent_at=datetime.now(UTC),
        in_reply_to=in_reply_to,
    )
    return seal_notice(notice, keys["kr-desk"].signer(), _recipient_keys(keys))


def _recipient_keys(keys: dict[str, AgencyKeys]) -> list[PublicKey]:
    return [
        k for a in ("kh-cnp", "aseanapol") for k in keys[a].public_keys() if k.kid == keys[a].encryption_kid
    ]


async def _rows(engine: AsyncEngine) -> int:
    async with make_sessionmaker(engine)() as session:
        return int((await session.execute(select(func.count()).select_from(Delivery))).scalar_one())


async def test_each_recipient_gets_one_row_however_often_the_record_comes(engine: AsyncEngine) -> None:
    keys = await _directory(engine)
    envelope = parse_envelope(_envelope(keys))
    sessions = make_sessionmaker(engine)
    cache = DirectoryCache()
    first_events = None
    for _ in range(3):
        async with sessions() as session:
            await admit(session, await cache.view(session), envelope, datetime.now(UTC), FRESH)
            outcome = await materialise(session, envelope, REF)
            await session.commit()
        events = outcome.events
        assert outcome.written is (first_events is None)  # only the first delivery writes rows
        first_events = first_events or events
        # Redelivery re-announces the same facts with the same ids, so the audit log records them once.
        assert [e.event_id for e in events] == [e.event_id for e in first_events]
    assert await _rows(engine) == 2


async def test_another_envelope_with_a_used_notice_id_is_a_replay(engine: AsyncEngine) -> None:
    keys = await _directory(engine)
    notice_id = uuid.uuid4()
    original = parse_envelope(_envelope(keys, notice_id))
    replay = parse_envelope(_envelope(keys, notice_id, summary="other"))
    async with make_sessionmaker(engine)() as session:
        await materialise(session, original, REF)
        await session.commit()
        with pytest.raises(EnvelopeError) as refused:
            await materialise(session, replay, REF)
    assert refused.value.code == "duplicate_notice"
    assert await _rows(engine) == 2


async def test_inbox_pages_in_delivery_order_without_gaps_or_repeats(engine: AsyncEngine) -> None:
    keys = await _directory(engine)
    sent = []
    sessions = make_sessionmaker(engine)
    for _ in range(7):
        envelope = parse_envelope(_envelope(keys))
        sent.append(str(envelope.routing.notice_id))
        async with sessions() as session:
            await materialise(session, envelope, REF)
            await session.commit()
    seen: list[str] = []
    after = 0
    async with sessions() as session:
        while page := await inbox(session, "kh-cnp", after, 3):
            seen += [d.notice_id for d, _ in page]
            after = decode_cursor(encode_cursor(page[-1][0].seq))
        assert await inbox(session, "kr-desk", 0, 100) == []
    assert seen == sent


async def test_a_run_written_together_keeps_the_rules_of_one_at_a_time(engine: AsyncEngine) -> None:
    """materialise_many: inbox places in the run's order, a redelivery announces the same events and
    writes nothing, another envelope with a used id is refused, alone, while the rest is written."""
    keys = await _directory(engine)
    stored = parse_envelope(_envelope(keys))
    sessions = make_sessionmaker(engine)
    async with sessions() as session:
        stored_events = (await materialise(session, stored, REF)).events
        await session.commit()
    fresh = [parse_envelope(_envelope(keys)) for _ in range(4)]
    replay = parse_envelope(_envelope(keys, fresh[1].routing.notice_id, summary="other"))
    run = [fresh[0], stored, fresh[1], replay, fresh[2], fresh[1], fresh[3]]
    async with sessions() as session:
        outcomes = await materialise_many(session, [(e, REF) for e in run])
        await session.commit()
    written = [o.written if isinstance(o, Materialised) else type(o).__name__ for o in outcomes]
    assert written == [True, False, True, "EnvelopeError", True, False, True]
    refused = outcomes[3]
    assert isinstance(refused, EnvelopeError) and refused.code == "duplicate_notice"
    assert [e.event_id for e in outcomes[1].events] == [e.event_id for e in stored_events]  # type: ignore[union-attr]
    assert [e.event_id for e in outcomes[5].events] == [e.event_id for e in outcomes[2].events]  # type: ignore[union-attr]
    async with sessions() as session:
        page = await inbox(session, "kh-cnp", 0, 100)
    order = [stored, *fresh]
    assert [d.notice_id for d, _ in page] == [str(e.routing.notice_id) for e in order]
    assert await _rows(engine) == 2 * len(order)


async def test_a_run_takes_no_replies_or_forwards(engine: AsyncEngine) -> None:
    keys = await _directory(engine)
    original = parse_envelope(_envelope(keys))
    reply = parse_envelope(_envelope(keys, in_reply_to=uuid.uuid4()))
    assert reply.routing.in_reply_to is not None
    async with make_sessionmaker(engine)() as session:
        with pytest.raises(ValueError, match="replies and forwards"):
            await materialise_many(session, [(original, REF), (reply, REF)])


def test_cursors_are_opaque_and_checked() -> None:
    assert decode_cursor(encode_cursor(42)) == 42
    assert decode_cursor(encode_cursor(2**63 - 1)) == 2**63 - 1
    # Forged, and well-formed but naming a place no inbox row can have (below 0, beyond a bigint).
    for forged in (
        "42",
        "djI6NDI",
        "not base64 !",
        encode_cursor(-1),
        encode_cursor(2**63),
        encode_cursor(10**30),
    ):
        with pytest.raises(DeliveryError) as refused:
            decode_cursor(forged)
        assert refused.value.code == "bad_cursor"


async def test_a_reader_never_sees_a_later_place_before_an_earlier_one_commits(engine: AsyncEngine) -> None:
    """Two ingest writers: the first holds its transaction open; the second must wait, or a reader's
    cursor would pass the second notice's place and never come back for the first."""
    keys = await _directory(engine)
    first, second = (parse_envelope(_envelope(keys)) for _ in range(2))
    sessions = make_sessionmaker(engine)
    second_committed = asyncio.Event()

    async def second_writer() -> None:
        async with sessions() as session:
            await materialise(session, second, REF)
            await session.commit()
        second_committed.set()

    async with sessions() as holding:
        await materialise(holding, first, REF)
        writer = asyncio.create_task(second_writer())
        await asyncio.sleep(1.5)  # ample time for the second writer to commit, were it not held back
        async with sessions() as reader:
            seen_early = await inbox(reader, "kh-cnp", 0, 10)
        assert not second_committed.is_set() and seen_early == []
        await holding.commit()
    await asyncio.wait_for(writer, 15)
    async with sessions() as reader:
        order = [d.notice_id for d, _ in await inbox(reader, "kh-cnp", 0, 10)]
    assert order == [str(first.routing.notice_id), str(second.routing.notice_id)]


async def test_inbox_places_go_past_32_bits(engine: AsyncEngine) -> None:
    """deliveries.seq is 64-bit: at 6,000 rows/s a 32-bit place runs out in about four days."""
    keys = await _directory(engine)
    sessions = make_sessionmaker(engine)
    beyond = 2**31 + 1000
    async with sessions() as session:
        if engine.dialect.name == "postgresql":
            await session.execute(text("SELECT setval('deliveries_seq_seq', :at)"), {"at": beyond})
        else:  # SQLite numbers a rowid one past the largest: make the largest that far up
            await materialise(session, parse_envelope(_envelope(keys)), REF)
            await session.execute(text("UPDATE deliveries SET seq = seq + :by"), {"by": beyond})
        await session.commit()
        after = int((await session.execute(select(func.max(Delivery.seq)))).scalar() or beyond)
    envelope = parse_envelope(_envelope(keys))
    async with sessions() as session:
        await materialise(session, envelope, REF)
        await session.commit()
    async with sessions() as session:
        page = await inbox(session, "kh-cnp", after, 10)
    assert [d.notice_id for d, _ in page] == [str(envelope.routing.notice_id)]
    assert page[0][0].seq > 2**31 and decode_cursor(encode_cursor(page[0][0].seq)) == page[0][0].seq
