"""The consume loop both consumers share: batches, manual commits after the work is durable, retries."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.errors import KafkaError

from services.platform.outage import TRANSIENT

log = structlog.get_logger("consumer")


Batch = Sequence[ConsumerRecord[bytes, bytes]]


async def consume(
    bootstrap: str,
    topics: Sequence[str],
    group_id: str,
    handle_batch: Callable[[Batch], Awaitable[None]],
    stop: asyncio.Event,
    max_records: int = 200,
) -> None:
    """At-least-once delivery into `handle_batch`; its writes are idempotent, which makes the effect
    exactly-once. Offsets are committed only after the batch is durable; a transient failure retries
    the same batch with backoff instead of skipping it."""
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=16 * 1024 * 1024,
    )
    await _start(consumer, stop)
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=max_records)
            # Every partition's records in one call (each partition's in its order): the per-batch costs
            # (a transaction, a lock, the directory read) are paid once, not once per partition.
            records = [record for partition_records in batches.values() for record in partition_records]
            if not records:
                continue
            await _until_done(handle_batch, records, stop)
            if stop.is_set():
                return  # uncommitted: the batch is redelivered to whoever consumes next
            await consumer.commit({partition: rs[-1].offset + 1 for partition, rs in batches.items()})
    finally:
        await consumer.stop()


async def _start(consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
    delay = 0.5
    while True:
        try:
            await consumer.start()
            return
        except KafkaError as exc:
            log.warning("kafka not reachable, retrying", error=str(exc), retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10)
            if stop.is_set():
                raise


async def _until_done(
    handle_batch: Callable[[Batch], Awaitable[None]], records: Batch, stop: asyncio.Event
) -> None:
    delay = 0.2
    while not stop.is_set():
        try:
            await handle_batch(records)
            return
        except TRANSIENT as exc:
            log.warning("batch not durable yet, retrying", error=type(exc).__name__, retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10)
