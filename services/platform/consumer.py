"""The consume loop both consumers share: batches, manual commits after the work is durable, a trace span
per record, and the retry loops it and the inbox notifier run until their service stops.

`until_stopped` retries the given exceptions with the given backoff (tenacity) and logs a warning before
each wait; a wait ends the moment the stop event is set, so a service told to stop never sits out a
backoff. It never gives up by itself: tenacity asks its stop strategies only after a failed attempt, before
the wait, while what matters here is whether `stop` was set by the end of the wait. So each caller looks at
`stop` at the top of its attempts and decides there what stopping means for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine, Sequence
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaConnectionError, KafkaError
from tenacity import RetryCallState, retry_if_exception_type, wait_exponential
from tenacity.asyncio import AsyncRetrying
from tenacity.wait import wait_base

from services.platform import tracing
from services.platform.kafka import KafkaAccess, Topics, await_topics, grants
from services.platform.outage import TRANSIENT
from services.platform.settings import Settings

log = structlog.get_logger("consumer")
# Doubling waits, at most 10 s apart: 0.5, 1, 2, 4, 8, 10, 10, ... s to start; 0.2, 0.4, ... s for a batch.
START_BACKOFF = wait_exponential(multiplier=0.5, max=10)
BATCH_BACKOFF = wait_exponential(multiplier=0.2, max=10)
START_RETRY = "kafka not reachable, retrying"  # operators and tests look for these two
BATCH_RETRY = "batch not durable yet, retrying"
COMMIT_EVERY_S = 0.1  # offsets of durable batches go to the group coordinator at most this often


Batch = Sequence[ConsumerRecord[bytes, bytes]]
Sleep = Callable[[float], Awaitable[None]]


async def consume(
    access: KafkaAccess,
    topics: Sequence[str],
    group_id: str,
    handle_batch: Callable[[Batch], Awaitable[None]],
    stop: asyncio.Event,
    max_records: int = 200,
    watch: Callable[[AIOKafkaConsumer], Coroutine[Any, Any, None]] | None = None,
    commit_every_s: float = COMMIT_EVERY_S,
    linger_s: float = 0.0,
) -> None:
    """At-least-once delivery into `handle_batch`; its writes are idempotent, which makes the effect
    exactly-once. Offsets are committed only after the batch is durable, at most every `commit_every_s`
    (each commit is a round trip to the group coordinator; what a crash leaves uncommitted is redelivered
    and written once all the same); a transient failure retries the same batch with backoff instead of
    skipping it. `watch` runs beside the loop while the consumer does (the metrics' lag follower) and is
    cancelled with it. `linger_s`: a batch waits that long after its first records for more (up to
    `max_records`), for a consumer whose cost is mostly per batch and whose readers wait on no record."""
    consumer = AIOKafkaConsumer(
        *topics,
        **access.client_args(),
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=16 * 1024 * 1024,
        # fetch_min_bytes stays 1 and fetch_max_wait_ms 500: asking the broker to wait 5 ms for 256 KiB
        # saved nothing under load and made an idle consumer fetch 200 times a second (the idle broker
        # went from 0.08 to 0.5 of a core over TLS).
    )
    await until_reachable(consumer.start, stop)
    watching = asyncio.create_task(watch(consumer)) if watch is not None else None

    async def traced(records: Batch) -> None:
        with tracing.processing(records, group_id):  # each record's span, for each attempt
            await handle_batch(records)

    book = OffsetBook(commit_every_s)
    try:
        while not stop.is_set():
            batches = await _gather(consumer, max_records, linger_s)
            # Every partition's records in one call (each partition's in its order): the per-batch costs
            # (a transaction, a lock, the directory read) are paid once, not once per partition.
            records = [record for partition_records in batches.values() for record in partition_records]
            if records:
                await _until_done(traced, records, stop)
                if stop.is_set():
                    break  # this batch stays uncommitted: redelivered to whoever consumes next
                book.durable({partition: rs[-1].offset + 1 for partition, rs in batches.items()})
            if book.due(time.monotonic()):
                await _commit(consumer, book)
        with contextlib.suppress(KafkaError):  # unreachable now: the next consumer reads those again
            await _commit(consumer, book)  # what is durable, before leaving the group
    finally:
        if watching is not None:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
        await consumer.stop()


async def _gather(
    consumer: AIOKafkaConsumer, max_records: int, linger_s: float
) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
    """What the consumer has, or waits for (200 ms at most); then, with `linger_s`, what else arrives
    within that long, up to `max_records`, each partition's records in their order. (The broker is not
    asked to hold its answers instead, with fetch_max_wait_ms: a fetch that waits holds up every
    partition it asks for, an idle consumer's too.)"""
    batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
    batches = await consumer.getmany(timeout_ms=200, max_records=max_records)
    if not batches or linger_s <= 0:
        return batches
    count = sum(map(len, batches.values()))
    deadline = time.monotonic() + linger_s
    while count < max_records and (left := deadline - time.monotonic()) > 0:
        more = await consumer.getmany(timeout_ms=max(1, int(left * 1000)), max_records=max_records - count)
        for partition, records in more.items():
            batches.setdefault(partition, []).extend(records)
            count += len(records)
    return batches


async def _commit(consumer: AIOKafkaConsumer, book: OffsetBook) -> None:
    # Another process of the service may have joined or left the group meanwhile, and the partitions
    # been dealt again: the batches are durable, and whoever holds a partition now reads it again from the
    # last commit, which the idempotent writes make harmless. So only the partitions still ours are
    # committed (checked before commit's first await: no race), and a commit the group refuses because
    # it rebalanced since is dropped the same way.
    offsets = book.take(consumer.assignment(), time.monotonic())
    try:
        if offsets:
            await consumer.commit(offsets)
    except CommitFailedError:
        log.warning("offsets not committed: the group rebalanced; the batches are redelivered")


class OffsetBook:
    """The next offset to read of each partition whose batches are durable but not yet committed."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self.pending: dict[TopicPartition, int] = {}
        self.last = 0.0  # when offsets were last taken to commit (monotonic)

    def durable(self, offsets: dict[TopicPartition, int]) -> None:
        self.pending.update(offsets)  # a partition's later batch supersedes its earlier one

    def due(self, now: float) -> bool:
        return bool(self.pending) and now - self.last >= self.every_s

    def take(self, ours: Collection[TopicPartition], now: float) -> dict[TopicPartition, int]:
        offsets = {partition: offset for partition, offset in self.pending.items() if partition in ours}
        self.pending.clear()
        self.last = now
        return offsets


async def until_reachable(connect: Callable[[], Awaitable[object]], stop: asyncio.Event) -> None:
    """Runs `connect` (start a consumer, find its topics), retrying while Kafka is out of reach, so a
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


async def ready_topics(settings: Settings, stop: asyncio.Event, service: str) -> Topics:
    """The topics, once Kafka is reachable and the service's are there (a consumer's first step). The
    services never make topics: an administrator does (`deskbridge kafka setup`, `deskbridge up`, the
    KafkaTopics in deploy/k8s), with each service's grants on them."""
    topics = Topics(settings.topic_prefix)
    access = KafkaAccess.of(settings)
    needed = [name for kind, name, _ in grants(topics)[service] if kind == "topic"]
    await until_reachable(lambda: await_topics(access, needed), stop)
    return topics


def sleep_until(stop: asyncio.Event) -> Sleep:
    """tenacity's `sleep`: waits the backoff out, or until `stop` is set."""

    async def sleep(seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)

    return sleep


def until_stopped(
    stop: asyncio.Event,
    retry_on: type[Exception] | tuple[type[Exception], ...],
    wait: wait_base,
    log: structlog.typing.FilteringBoundLogger,
    say: str,
    describe: Callable[[BaseException], str] = lambda exc: type(exc).__name__,
    sleep: Sleep | None = None,
) -> AsyncRetrying:
    """Attempts (`async for attempt in ...: with attempt: ...`) until one succeeds; an exception that is
    not a `retry_on` ends the loop and propagates. Before each wait, `log` warns `say` with the error
    (`describe`d) and the wait in seconds. `sleep` replaces the wait on `stop` (tests record it)."""

    def warn(state: RetryCallState) -> None:
        assert state.outcome is not None  # a failed attempt's, before its wait
        error = state.outcome.exception()
        assert error is not None
        log.warning(say, error=describe(error), retry_in_s=state.upcoming_sleep)

    return AsyncRetrying(
        retry=retry_if_exception_type(retry_on),
        wait=wait,
        sleep=sleep or sleep_until(stop),
        before_sleep=warn,
    )
