"""The consume loop both consumers share: batches, manual commits after the work is durable, retries."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.errors import KafkaConnectionError, KafkaError
from tenacity import wait_exponential

from services.platform.kafka import Topics, create_topics
from services.platform.outage import TRANSIENT
from services.platform.retrying import Sleep, until_stopped
from services.platform.settings import Settings

log = structlog.get_logger("consumer")
# Doubling waits, at most 10 s apart: 0.5, 1, 2, 4, 8, 10, 10, ... s to start; 0.2, 0.4, ... s for a batch.
START_BACKOFF = wait_exponential(multiplier=0.5, max=10)
BATCH_BACKOFF = wait_exponential(multiplier=0.2, max=10)
START_RETRY = "kafka not reachable, retrying"  # operators and tests look for these two
BATCH_RETRY = "batch not durable yet, retrying"


Batch = Sequence[ConsumerRecord[bytes, bytes]]


async def consume(
    bootstrap: str,
    topics: Sequence[str],
    group_id: str,
    handle_batch: Callable[[Batch], Awaitable[None]],
    stop: asyncio.Event,
    max_records: int = 200,
    watch: Callable[[AIOKafkaConsumer], Coroutine[Any, Any, None]] | None = None,
) -> None:
    """At-least-once delivery into `handle_batch`; its writes are idempotent, which makes the effect
    exactly-once. Offsets are committed only after the batch is durable; a transient failure retries
    the same batch with backoff instead of skipping it. `watch` runs beside the loop while the consumer
    does (the metrics' lag follower) and is cancelled with it."""
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=16 * 1024 * 1024,
    )
    await until_reachable(consumer.start, stop)
    watching = asyncio.create_task(watch(consumer)) if watch is not None else None
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
        if watching is not None:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
        await consumer.stop()


async def until_reachable(connect: Callable[[], Awaitable[object]], stop: asyncio.Event) -> None:
    """Runs `connect` (start a consumer, create the topics), retrying while Kafka is out of reach, so a
    service started before its broker waits for it. The first attempt is always made; once `stop` is set
    no further one is, and it gives up with a KafkaError: nothing was done."""
    async for attempt in until_stopped(stop, KafkaError, START_BACKOFF, log, START_RETRY, describe=str):
        if stop.is_set() and attempt.retry_state.attempt_number > 1:
            raise KafkaConnectionError("stopped before Kafka was reachable")
        with attempt:
            await connect()


async def _until_done(
    handle_batch: Callable[[Batch], Awaitable[None]],
    records: Batch,
    stop: asyncio.Event,
    sleep: Sleep | None = None,
) -> None:
    """Runs the batch until it is durable, retrying an outage (never skipping the batch), or until `stop`
    is set: then no further attempt is made, and the batch stays uncommitted. `sleep`: see until_stopped."""
    async for attempt in until_stopped(stop, TRANSIENT, BATCH_BACKOFF, log, BATCH_RETRY, sleep=sleep):
        if stop.is_set():
            return
        with attempt:
            await handle_batch(records)


async def ready_topics(settings: Settings, stop: asyncio.Event) -> Topics:
    """The service's topics, created where missing once Kafka is reachable (a consumer's first step)."""
    topics = Topics(settings.topic_prefix)
    bootstrap, partitions = settings.kafka_bootstrap, settings.topic_partitions
    await until_reachable(lambda: create_topics(bootstrap, topics, partitions), stop)
    return topics
