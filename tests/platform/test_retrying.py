"""The retry loops tenacity drives (services/platform/consumer.py): the consumer's batch and start, and the
inbox notifier's reconnect. Fakes stand in for the batch and the broker; the waits are tenacity's."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka.errors import KafkaConnectionError
from sqlalchemy.exc import OperationalError
from structlog.testing import capture_logs

from services.delivery.notify import InboxNotifier
from services.platform.consumer import (
    BATCH_RETRY,
    START_RETRY,
    Batch,
    _until_done,
    sleep_until,
    until_reachable,
)
from services.platform.kafka import KafkaAccess, Topics

RECORDS: Batch = []  # the loop hands the batch on as it is; its records do not matter here


class FlakyBatch:
    """Raises `outages` outage exceptions, then succeeds; counts its calls."""

    def __init__(self, outages: int, error: Exception | None = None) -> None:
        self.outages = outages
        self.error = error or OperationalError("SELECT 1", {}, ConnectionRefusedError())
        self.calls = 0

    async def __call__(self, records: Batch) -> None:
        assert records is RECORDS
        self.calls += 1
        if self.calls <= self.outages:
            raise self.error


class RecordingSleep:
    """tenacity's sleep for the tests: records each wait; waits on `stop` (as the service does) only from
    `from_s` on, and says when such a wait has begun."""

    def __init__(self, stop: asyncio.Event, from_s: float = float("inf")) -> None:
        self.waits: list[float] = []
        self.real = sleep_until(stop)
        self.from_s = from_s
        self.waiting = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if seconds >= self.from_s:
            self.waiting.set()
            await self.real(seconds)


async def test_a_batch_is_retried_after_an_outage_with_doubling_waits_up_to_10_s() -> None:
    stop = asyncio.Event()
    batch, sleep = FlakyBatch(outages=8), RecordingSleep(stop)
    with capture_logs() as logs:
        await _until_done(batch, RECORDS, stop, sleep)
    assert batch.calls == 9
    assert sleep.waits == [0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10, 10]
    retries = [entry for entry in logs if entry["event"] == BATCH_RETRY]
    assert BATCH_RETRY == "batch not durable yet, retrying"
    assert [(e["log_level"], e["error"], e["retry_in_s"]) for e in retries] == [
        ("warning", "OperationalError", wait) for wait in sleep.waits
    ]


async def test_a_batch_that_succeeds_at_once_never_waits() -> None:
    stop = asyncio.Event()
    batch, sleep = FlakyBatch(outages=0), RecordingSleep(stop)
    await _until_done(batch, RECORDS, stop, sleep)
    assert (batch.calls, sleep.waits) == (1, [])


async def test_a_fault_that_is_not_an_outage_is_not_retried() -> None:
    stop = asyncio.Event()
    batch, sleep = FlakyBatch(outages=1, error=ValueError("a bug")), RecordingSleep(stop)
    with pytest.raises(ValueError, match="a bug"):
        await _until_done(batch, RECORDS, stop, sleep)
    assert (batch.calls, sleep.waits) == (1, [])


async def test_stop_ends_a_batch_backoff_at_once_and_no_attempt_follows() -> None:
    stop = asyncio.Event()
    # The first five waits pass at once; the sixth (6.4 s) really waits, on `stop`.
    batch, sleep = FlakyBatch(outages=1000), RecordingSleep(stop, from_s=5)
    retrying = asyncio.create_task(_until_done(batch, RECORDS, stop, sleep))
    await asyncio.wait_for(sleep.waiting.wait(), 5)
    stopped_at = time.monotonic()
    stop.set()
    await asyncio.wait_for(retrying, 1)
    assert time.monotonic() - stopped_at < 0.5
    assert sleep.waits == [0.2, 0.4, 0.8, 1.6, 3.2, 6.4]
    assert batch.calls == 6  # the batch stays uncommitted, for whoever consumes next


async def test_a_set_stop_makes_no_attempt_at_a_batch() -> None:
    stop = asyncio.Event()
    stop.set()
    batch = FlakyBatch(outages=0)
    await _until_done(batch, RECORDS, stop, RecordingSleep(stop))
    assert batch.calls == 0


class FlakyStart:
    """A consumer whose start fails `failures` times as when Kafka is out of reach."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def start(self) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 9)]")


async def test_starting_against_kafka_is_retried_while_it_is_out_of_reach() -> None:
    fake = FlakyStart(failures=1)
    with capture_logs() as logs:
        await until_reachable(fake.start, asyncio.Event())
    assert fake.calls == 2
    assert START_RETRY == "kafka not reachable, retrying"
    [retry] = [entry for entry in logs if entry["event"] == START_RETRY]
    assert retry["retry_in_s"] == 0.5 and "Unable to bootstrap" in retry["error"]


async def test_stop_ends_the_start_backoff_at_once_with_a_kafka_error() -> None:
    fake, stop = FlakyStart(failures=1000), asyncio.Event()
    starting = asyncio.create_task(until_reachable(fake.start, stop))
    await asyncio.sleep(0.1)  # into the first wait, of 0.5 s
    stopped_at = time.monotonic()
    stop.set()
    with pytest.raises(KafkaConnectionError, match="stopped before Kafka was reachable"):
        await asyncio.wait_for(starting, 1)
    assert time.monotonic() - stopped_at < 0.2
    assert fake.calls == 1


async def test_the_notifier_reconnects_every_2_s_and_stops_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    notifier, stop, follows = InboxNotifier(), asyncio.Event(), []

    async def lose_the_broker(access: KafkaAccess, topics: Topics, stop: asyncio.Event) -> None:
        follows.append(access.bootstrap)
        raise KafkaConnectionError("broker went away")

    monkeypatch.setattr(notifier, "_follow", lose_the_broker)
    with capture_logs() as logs:
        following = asyncio.create_task(notifier.run(KafkaAccess("127.0.0.1:9"), Topics("t-"), stop))
        await asyncio.sleep(0.1)
        stopped_at = time.monotonic()
        stop.set()
        await asyncio.wait_for(following, 1)
    assert time.monotonic() - stopped_at < 0.2
    assert follows == ["127.0.0.1:9"]
    [retry] = [entry for entry in logs if entry["event"] == "notifier lost the broker; retrying"]
    assert (retry["error"], retry["retry_in_s"]) == ("KafkaConnectionError", 2)
