"""The consume loop's offsets: committed only once a batch is durable, at most every commit interval,
and what is durable is committed when the consumer stops, however long the interval."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from devstack.kafka import KafkaBroker
from services.platform.consumer import Batch, OffsetBook, consume
from services.platform.kafka import KafkaAccess, Topics, create_topics, make_producer
from tests.conftest import eventually

A, B = TopicPartition("t", 0), TopicPartition("t", 1)


def test_the_book_keeps_each_partitions_latest_durable_offset_and_commits_only_ours() -> None:
    book = OffsetBook(every_s=0.1)
    assert not book.due(100.0)  # nothing durable: nothing to commit
    book.durable({A: 5, B: 3})
    book.durable({A: 9})
    assert book.due(100.0)
    assert book.take({A}, 100.0) == {A: 9}  # B was dealt to another consumer meanwhile
    assert book.pending == {} and not book.due(100.05)
    book.durable({B: 4})
    assert not book.due(100.05) and book.due(100.2)


async def _committed(access: KafkaAccess, topic: str, group: str) -> int:
    consumer = AIOKafkaConsumer(**access.client_args(), group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return sum([await consumer.committed(TopicPartition(topic, p)) or 0 for p in range(3)])
    finally:
        await consumer.stop()


@pytest.mark.parametrize("every_s", [0.1, 3600.0])
async def test_offsets_follow_durable_batches_and_are_committed_at_stop(
    kafka_broker: KafkaBroker, topic_prefix: str, every_s: float
) -> None:
    access = kafka_broker.access()
    topics = Topics(topic_prefix)
    await create_topics(access, topics, 3)
    group = f"{topic_prefix}offsets-{int(every_s)}"
    producer = make_producer(access, "tests-offsets")
    await producer.start()
    try:
        for n in range(30):
            await producer.send_and_wait(topics.events, b"{}", key=f"KD-2026-{n:04d}".encode())
    finally:
        await producer.stop()

    handled: list[int] = []

    async def handle(records: Batch) -> None:
        handled.extend(r.offset for r in records)

    stop = asyncio.Event()
    running = asyncio.create_task(
        consume(access, [topics.events], group, handle, stop, commit_every_s=every_s)
    )
    await eventually(lambda: _at_least(handled, 30), within=30)
    if every_s < 1:  # committed while running, within moments of the batches being durable
        assert await eventually(lambda: _committed_all(access, topics.events, group), within=10)
    stop.set()
    await running
    assert await _committed(access, topics.events, group) == 30


async def _at_least(handled: list[int], count: int) -> bool:
    return len(handled) >= count


async def _committed_all(access: KafkaAccess, topic: str, group: str) -> bool:
    return await _committed(access, topic, group) == 30


@pytest.mark.parametrize(("linger_s", "max_records", "first"), [(0.0, 200, 1), (3.0, 200, 5), (3.0, 3, 3)])
async def test_a_lingering_batch_takes_what_arrives_within_its_linger_up_to_its_size(
    kafka_broker: KafkaBroker, topic_prefix: str, linger_s: float, max_records: int, first: int
) -> None:
    access = kafka_broker.access()
    topics = Topics(topic_prefix)
    await create_topics(access, topics, 3)
    batches: list[list[str]] = []
    assigned = asyncio.Event()

    async def handle(records: Batch) -> None:
        batches.append([(r.value or b"").decode() for r in records])

    async def until_assigned(consumer: AIOKafkaConsumer) -> None:
        await eventually(lambda: _assigned(consumer), within=30)
        assigned.set()

    stop = asyncio.Event()
    running = asyncio.create_task(
        consume(
            access,
            [topics.events],
            f"{topic_prefix}linger",
            handle,
            stop,
            max_records=max_records,
            watch=until_assigned,
            linger_s=linger_s,
        )
    )
    producer = make_producer(access, "tests-linger")
    await producer.start()
    try:
        await asyncio.wait_for(assigned.wait(), timeout=30)
        await producer.send_and_wait(topics.events, b"0", key=b"KD-2026-0000")
        await asyncio.sleep(1.0)  # well inside the linger, well after the first record was fetched
        for n in range(1, 5):
            await producer.send_and_wait(topics.events, str(n).encode(), key=f"KD-2026-{n:04d}".encode())
        await eventually(lambda: _at_least_records(batches, 5), within=30)
    finally:
        await producer.stop()
        stop.set()
        await running
    assert len(batches[0]) == first
    assert batches[0][0] == "0"
    assert sorted(v for batch in batches for v in batch) == ["0", "1", "2", "3", "4"]  # each once
    assert max(map(len, batches)) <= max_records


async def _at_least_records(batches: list[list[str]], count: int) -> bool:
    return sum(map(len, batches)) >= count


async def _assigned(consumer: AIOKafkaConsumer) -> bool:
    return bool(consumer.assignment())
