"""The limits of deskbridge's parts without deskbridge: raw aiokafka on the same broker with the same
producer settings, and raw row inserts into the same PostgreSQL."""

from __future__ import annotations

import asyncio
import time
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.stats import Figure
from services.platform.kafka import MAX_RECORD_BYTES, KafkaAccess, Topics, create_topics, make_producer

ROWS_PER_TRANSACTION = 100
PARTITIONS = 3  # as the services' topics (Settings.topic_partitions)
PRODUCE = "produce (make_producer)"
BATCHING_PRODUCE = "produce (make_producer settings, 1 MiB batches)"
CONSUME = "consume"


def batching_producer(access: KafkaAccess) -> AIOKafkaProducer:
    """make_producer's guarantees (acks=all, idempotent) with batches of up to 1 MiB instead of aiokafka's
    16 KiB default, which holds a single ~12 KB envelope: how much of the limit is that setting."""
    return AIOKafkaProducer(
        **access.client_args(),
        client_id="bench-raw-batching",
        acks="all",
        enable_idempotence=True,
        max_request_size=MAX_RECORD_BYTES,
        linger_ms=2,
        max_batch_size=1024 * 1024,
    )


async def raw_kafka(
    access: KafkaAccess, prefix: str, envelope: bytes, messages: int, repeats: int
) -> dict[str, Figure]:
    """Messages/s for producers sending as fast as they are fed, and for a consumer reading the records
    back; each repeat uses fresh topics."""
    rates: dict[str, list[float]] = {PRODUCE: [], BATCHING_PRODUCE: [], CONSUME: []}
    for _ in range(repeats):
        for name, producer in (
            (PRODUCE, make_producer(access, "bench-raw")),
            (BATCHING_PRODUCE, batching_producer(access)),
        ):
            topics = Topics(f"{prefix}raw{uuid.uuid4().hex[:6]}.")
            await create_topics(access, topics, PARTITIONS)
            rates[name].append(await _produce_all(producer, topics.notices, envelope, messages))
        rates[CONSUME].append(await _consume_all(access, topics.notices, messages))
    return {name: Figure.of_rates(values) for name, values in rates.items()}


async def _produce_all(producer: AIOKafkaProducer, topic: str, envelope: bytes, messages: int) -> float:
    await producer.start()
    try:
        for partition in range(PARTITIONS):  # leaders elected and metadata known before the clock starts
            await producer.send_and_wait(topic, envelope, partition=partition)
        started = time.perf_counter()
        pending = [
            await producer.send(topic, envelope, key=f"KD-2025-{i % 97:04d}".encode())
            for i in range(messages)
        ]
        await asyncio.gather(*pending)
        return messages / (time.perf_counter() - started)
    finally:
        await producer.stop()


async def _consume_all(access: KafkaAccess, topic: str, messages: int) -> float:
    consumer = AIOKafkaConsumer(
        **access.client_args(),
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=16 * 1024 * 1024,
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        seen = -PARTITIONS  # the warm-up records
        started = time.perf_counter()
        async with asyncio.timeout(120):
            while seen < messages:
                for records in (await consumer.getmany(timeout_ms=200, max_records=1000)).values():
                    seen += len(records)
        return messages / (time.perf_counter() - started)
    finally:
        await consumer.stop()


async def row_writes(engine: AsyncEngine, rows: int, repeats: int) -> Figure:
    """Rows/s inserted into a table shaped like `deliveries`, 100 rows to a transaction: what writing
    one inbox row or one audit leaf costs the database at least."""
    async with engine.begin() as connection:
        await connection.execute(text("DROP TABLE IF EXISTS bench_rows"))
        await connection.execute(
            text(
                "CREATE TABLE bench_rows (seq bigserial PRIMARY KEY, notice_id varchar(36) NOT NULL, "
                "recipient varchar(64) NOT NULL, state varchar(16) NOT NULL, "
                "delivered_at timestamptz NOT NULL DEFAULT now(), UNIQUE (notice_id, recipient))"
            )
        )
        await connection.execute(text("CREATE INDEX ON bench_rows (recipient, seq)"))
    insert = text("INSERT INTO bench_rows (notice_id, recipient, state) VALUES (:n, :r, 'delivered')")
    rates = []
    try:
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in range(rows // ROWS_PER_TRANSACTION):
                batch = [{"n": str(uuid.uuid4()), "r": "bench-01"} for _ in range(ROWS_PER_TRANSACTION)]
                async with engine.begin() as connection:
                    await connection.execute(insert, batch)
            rates.append(
                rows // ROWS_PER_TRANSACTION * ROWS_PER_TRANSACTION / (time.perf_counter() - started)
            )
    finally:
        async with engine.begin() as connection:
            await connection.execute(text("DROP TABLE bench_rows"))
    return Figure.of_rates(rates)
