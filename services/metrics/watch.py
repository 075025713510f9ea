"""The gauges kept fresh by looking rather than counting: consumer lag per partition, and whether the
database and Kafka are out of reach. Each runs as a task beside the work it watches, until cancelled."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import IllegalStateError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.metrics.registry import Metrics
from services.platform.kafka import KafkaAccess
from services.platform.outage import DATABASE_UNREACHABLE, KAFKA_UNREACHABLE

log = structlog.get_logger("metrics")

LAG_REFRESH_S = 2.0
PROBE_TIMEOUT_S = 5.0


def lag_follower(
    metrics: Metrics, consumer_name: str
) -> Callable[[AIOKafkaConsumer], Coroutine[Any, Any, None]]:
    """For platform.consumer.consume's `watch`: every couple of seconds, each assigned partition's lag
    from what the consumer already knows (the end offset its last fetch reported, its own position), so
    no request goes to Kafka for it. A partition given to another consumer drops out of the gauge."""
    gauge = metrics.consumer_lag

    async def follow(consumer: AIOKafkaConsumer) -> None:
        shown: set[TopicPartition] = set()
        while True:
            current: set[TopicPartition] = set()
            for tp in list(consumer.assignment()):
                if tp not in consumer.assignment():
                    continue  # revoked while we awaited the last position
                end = consumer.highwater(tp)
                if end is None:
                    continue  # not fetched from yet
                try:
                    position = await consumer.position(tp)
                except IllegalStateError:
                    continue
                gauge.labels(consumer_name, tp.topic, str(tp.partition)).set(max(0, end - position))
                current.add(tp)
            for tp in shown - current:
                gauge.remove(consumer_name, tp.topic, str(tp.partition))
            shown = current
            await asyncio.sleep(LAG_REFRESH_S)

    return follow


class _KafkaProbe:
    """A metadata request to any broker, on an admin client made once reachable and dropped on failure."""

    def __init__(self, access: KafkaAccess) -> None:
        self.access = access
        self.admin: AIOKafkaAdminClient | None = None

    async def __call__(self) -> None:
        try:
            if self.admin is None:
                self.admin = AIOKafkaAdminClient(**self.access.client_args(), client_id="deskbridge-probe")
                await self.admin.start()
            await self.admin.describe_cluster()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        admin, self.admin = self.admin, None
        if admin is not None:
            await admin.close()


async def watch_outages(metrics: Metrics, engine: AsyncEngine, kafka: KafkaAccess, every_s: float) -> None:
    """Probes the database (`SELECT 1`) and Kafka (cluster metadata, as `kafka`'s identity: under TLS a
    client the brokers refuse is no answer) every `every_s`, setting deskbridge_outage{dependency} to 1
    while a probe fails, 0 once one succeeds. What counts as out of
    reach is services/platform/outage.py's, plus no answer within PROBE_TIMEOUT_S; any other failure
    is logged as a fault of the probe and counted as an outage too, since nothing vouches for the part."""

    async def database() -> None:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    broker = _KafkaProbe(kafka)
    probes = (("database", database, DATABASE_UNREACHABLE), ("kafka", broker, KAFKA_UNREACHABLE))
    try:
        while True:
            for dependency, probe, unreachable in probes:
                metrics.outage.labels(dependency).set(await _fails(dependency, probe, unreachable))
            await asyncio.sleep(every_s)
    finally:
        await broker.close()


@contextlib.asynccontextmanager
async def outages_watched(
    metrics: Metrics, engine: AsyncEngine, kafka: KafkaAccess, every_s: float
) -> AsyncIterator[None]:
    """watch_outages as a task for as long as the block runs."""
    probe = asyncio.create_task(watch_outages(metrics, engine, kafka, every_s))
    try:
        yield
    finally:
        probe.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await probe


async def _fails(
    dependency: str, probe: Callable[[], Awaitable[None]], unreachable: tuple[type[Exception], ...]
) -> int:
    outage: tuple[type[Exception], ...] = (TimeoutError, *unreachable)
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            await probe()
    except outage:
        return 1
    except Exception:
        log.exception("outage probe failed unexpectedly", dependency=dependency)
        return 1
    return 0
