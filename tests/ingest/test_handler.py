"""Ingest on the real broker: bad records go to the dead-letter topic with a reason and never stop the
flow; redelivery and a killed consumer neither lose nor duplicate an inbox row."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from devstack.processes import spawn_child
from services.delivery.models import Delivery, NoticeRow
from services.envelope.keys import AgencyKeys
from services.notices.models import Submission
from tests.conftest import Stack, dead_letters, eventually, records_on
from tests.support.sealing import notice_body, seal

RECIPIENTS = ["kh-cnp", "aseanapol"]


def _keys(stack: Stack, agency: str) -> AgencyKeys:
    return AgencyKeys.load(stack.home / agency)


async def _produce(stack: Stack, value: bytes, key: str = "KD-2025-0331") -> None:
    await stack.publisher.send(stack.topics.notices, key, value, [])


async def _inbox_rows(stack: Stack, notice_id: str | None = None) -> int:
    query = select(func.count()).select_from(Delivery)
    if notice_id is not None:
        query = query.where(Delivery.notice_id == notice_id)
    async with stack.sessions() as session:
        return int((await session.execute(query)).scalar_one())


async def test_poison_records_are_dead_lettered_with_reasons_and_good_ones_flow(stack: Stack) -> None:
    desk = _keys(stack, "kr-desk")
    impostor = AgencyKeys.generate("kr-desk")  # same name, key not in the directory
    partner = _keys(stack, "kh-cnp")

    _, good_before = seal(stack, desk, RECIPIENTS)
    _, unknown_signer = seal(stack, impostor, RECIPIENTS)
    _, forged = seal(stack, desk, RECIPIENTS)
    forged = forged.replace(b'"signature":"', b'"signature":"AAAA', 1)
    _, expired = seal(
        stack, desk, RECIPIENTS, expires_at=(datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    )
    # A partner's envelope is fine if it names itself as sender; naming the desk with its own key is not.
    _, partner_ok = seal(stack, partner, ["kr-desk", "interpol-ncb-phnom-penh"])
    _, to_itself = seal(stack, partner, RECIPIENTS)  # kh-cnp is among RECIPIENTS
    _, good_after = seal(stack, desk, RECIPIENTS)

    poison: list[tuple[bytes, str]] = [
        (b"\x00\xff garbage \x13", "malformed"),
        (b'{"valid": "json", "but": "no envelope"}', "malformed"),
        (b"", "malformed"),
        (b"x" * (2 * 1024 * 1024 + 1000), "oversize"),
        (unknown_signer, "unknown_key"),
        (forged, "bad_signature"),
        (expired, "expired"),
        (to_itself, "recipient_mismatch"),
    ]
    await _produce(stack, good_before)
    for value, _reason in poison:
        await _produce(stack, value)
    await _produce(stack, partner_ok)
    await _produce(stack, good_after)

    letters = await dead_letters(stack, len(poison))
    assert sorted(str(letter["reason"]) for letter in letters) == sorted(r for _, r in poison)
    assert all(letter["detail"] for letter in letters)
    # The huge record is kept whole in the DLQ: nothing is lost, only set aside.
    assert any(letter["size"] == str(2 * 1024 * 1024 + 1000) for letter in letters)
    await eventually(lambda: _count_is(stack, 3 * len(RECIPIENTS)))


async def _count_is(stack: Stack, expected: int) -> bool:
    return await _inbox_rows(stack) == expected


async def test_redelivery_is_absorbed_and_a_replayed_notice_id_is_refused(stack: Stack) -> None:
    desk = _keys(stack, "kr-desk")
    notice_id, envelope = seal(stack, desk, RECIPIENTS)
    _, replay = seal(stack, desk, RECIPIENTS, notice_id=notice_id, summary="same id, other content")
    await _produce(stack, envelope)
    await _produce(stack, envelope)  # what a producer retry or a consumer restart looks like
    await _produce(stack, replay)
    [letter] = await dead_letters(stack, 1)
    assert letter["reason"] == "duplicate_notice"
    await eventually(lambda: _rows_for(stack, notice_id, len(RECIPIENTS)))
    async with stack.sessions() as session:
        stored = await session.get(NoticeRow, notice_id)
        assert stored is not None and stored.envelope == envelope


async def _rows_for(stack: Stack, notice_id: str, expected: int) -> bool:
    return await _inbox_rows(stack, notice_id) == expected


def _start_ingest(stack: Stack) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DESKBRIDGE_DATABASE_URL": stack.settings.database_url,
        **stack.environment("ingest"),
        "DESKBRIDGE_TOPIC_PREFIX": stack.settings.topic_prefix,
        "DESKBRIDGE_LOG_LEVEL": "warning",
    }
    return spawn_child([sys.executable, "-m", "services.ingest"], env=env)


@pytest.mark.without_ingest
async def test_ingest_killed_mid_stream_loses_and_duplicates_nothing(stack: Stack) -> None:
    total = 300
    desk = stack.client("kr-desk")
    gate = asyncio.Semaphore(16)

    async def send(i: int) -> str:
        async with gate:
            body = notice_body(RECIPIENTS, case_ref=f"KD-2025-{i % 7:04d}")
            response = await desk.post("/v1/notices", json=body)
            assert response.status_code == 202, response.text
            return str(body["notice_id"])

    sent = await asyncio.gather(*(send(i) for i in range(total)))
    expected = total * len(RECIPIENTS)

    first = _start_ingest(stack)
    try:
        # Kill hard as soon as part of the backlog is in: some of it committed, the rest not.
        done = await eventually(lambda: _inbox_rows(stack), within=60, every=0.01)
        assert done < expected, "ingest finished before it could be killed; raise `total`"
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    partial = await _inbox_rows(stack)

    second = _start_ingest(stack)
    try:
        await eventually(lambda: _count_is(stack, expected), within=90)
        await asyncio.sleep(1.0)  # anything duplicated would have shown up by now
        assert await _inbox_rows(stack) == expected
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(20)
    assert second.returncode == 0, "ingest did not stop cleanly on SIGTERM"
    async with stack.sessions() as session:
        per_notice = dict(
            (
                await session.execute(select(Delivery.notice_id, func.count()).group_by(Delivery.notice_id))
            ).all()
        )
    assert set(per_notice) == set(sent)
    assert set(per_notice.values()) == {len(RECIPIENTS)}
    assert partial < expected
    # The redelivered records were recognised as the same envelopes, not refused as replays.
    assert await records_on(stack, stack.topics.dead_letters) == 0
    # Each case reached each recipient in the order Kafka accepted its notices, across the kill.
    async with stack.sessions() as session:
        accepted = (await session.execute(select(Submission).order_by(Submission.kafka_offset))).scalars()
        by_case: dict[str, list[str]] = {}
        for submission in accepted:
            by_case.setdefault(submission.case_ref, []).append(submission.notice_id)
        for recipient in RECIPIENTS:
            rows = await session.execute(
                select(Delivery.notice_id, NoticeRow.case_ref)
                .join(NoticeRow, NoticeRow.notice_id == Delivery.notice_id)
                .where(Delivery.recipient == recipient)
                .order_by(Delivery.seq)
            )
            delivered: dict[str, list[str]] = {}
            for notice_id, case_ref in rows.all():
                delivered.setdefault(case_ref, []).append(notice_id)
            assert delivered == by_case, recipient
