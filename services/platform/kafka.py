"""Topic names, the idempotent producer and CloudEvents-style record headers, shared by all services."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from opentelemetry.context import Context
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.events import Event
from services.platform import tracing
from services.platform.errors import BrokerUnavailable

MAX_RECORD_BYTES = 2 * 1024 * 1024 + 64 * 1024  # an envelope at its limit plus headers


@dataclass(frozen=True)
class Topics:
    prefix: str = ""

    @property
    def notices(self) -> str:
        return f"{self.prefix}notices.v1"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}notices.dlq.v1"

    @property
    def deliveries(self) -> str:
        return f"{self.prefix}deliveries.v1"

    @property
    def admin(self) -> str:
        return f"{self.prefix}admin.v1"

    def all(self) -> list[str]:
        return [self.notices, self.dead_letters, self.deliveries, self.admin]


async def create_topics(bootstrap: str, topics: Topics, partitions: int = 3) -> None:
    """Idempotent: topics that exist already are left as they are. Each partition gets three replicas,
    or one per broker on a smaller cluster (aiokafka cannot ask for the broker's default)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        replicas = min(3, len((await admin.describe_cluster())["brokers"]))
        wanted = [
            NewTopic(
                name,
                num_partitions=partitions,
                replication_factor=replicas,
                # The broker's clock stamps each record: ingest judges freshness against it, and no
                # producer can backdate a record.
                topic_configs={
                    "max.message.bytes": str(MAX_RECORD_BYTES),
                    "message.timestamp.type": "LogAppendTime",
                },
            )
            for name in topics.all()
            if name not in existing
        ]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(wanted)
    finally:
        await admin.close()


def make_producer(bootstrap: str, client_id: str, request_timeout_ms: int = 10_000) -> AIOKafkaProducer:
    """acks=all on an idempotent producer: a send that returns is on every in-sync replica, once."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        max_request_size=MAX_RECORD_BYTES,
        # An envelope is ~12 KB: the 16 KiB default batch holds one, so every send was its own request.
        max_batch_size=1024 * 1024,
        request_timeout_ms=request_timeout_ms,
        linger_ms=2,
    )


def record_time(record: ConsumerRecord[bytes, bytes]) -> datetime:
    """When the broker appended the record (topics use LogAppendTime)."""
    return datetime.fromtimestamp(record.timestamp / 1000, UTC)


def cloud_headers(ce_type: str, ce_id: str, source: str) -> list[tuple[str, bytes]]:
    """The CloudEvents attributes (Kafka binary mode). The publisher adds the W3C `traceparent` and
    `tracestate` of the record's send span, under the names OpenTelemetry's Kafka instrumentations read."""
    return [
        ("ce_specversion", b"1.0"),
        ("ce_id", ce_id.encode()),
        ("ce_type", ce_type.encode()),
        ("ce_source", source.encode()),
        ("ce_time", datetime.now(UTC).isoformat().encode()),
    ]


def header_value(headers: list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...], name: str) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode(errors="replace")
    return None


class EventPublisher:
    """Sends events and envelopes with acks=all, starting its producer lazily so a service can come up
    while Kafka is down and answer 503 until it returns."""

    def __init__(self, bootstrap: str, client_id: str, topics: Topics, timeout_s: float) -> None:
        self.topics = topics
        self._bootstrap = bootstrap
        self._client_id = client_id
        self._timeout_s = timeout_s
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def _ready(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                producer = make_producer(self._bootstrap, self._client_id, int(self._timeout_s * 1000))
                try:
                    await asyncio.wait_for(producer.start(), self._timeout_s)
                except (TimeoutError, KafkaError, OSError) as exc:
                    await producer.stop()
                    raise BrokerUnavailable("Kafka is not reachable") from exc
                self._producer = producer
            return self._producer

    async def send(
        self, topic: str, key: str, value: bytes, headers: list[tuple[str, bytes]]
    ) -> tuple[int, int]:
        """Returns (partition, offset) once every in-sync replica has the record."""
        with tracing.sending(topic, key, header_value(headers, "ce_id")) as sent:
            producer = await self._ready()
            try:
                metadata = await asyncio.wait_for(
                    producer.send_and_wait(topic, value, key=key.encode(), headers=headers + sent.headers),
                    self._timeout_s,
                )
            except (TimeoutError, KafkaError) as exc:
                raise BrokerUnavailable("Kafka did not acknowledge the record in time") from exc
            sent.acked(metadata.partition, metadata.offset)
        return metadata.partition, metadata.offset

    def _routed(self, event: Event, source: str) -> tuple[str, str, bytes, list[tuple[str, bytes]]]:
        topic = self.topics.deliveries if event.type.value.startswith("notice.") else self.topics.admin
        key = event.case_ref or event.agency or event.actor
        headers = cloud_headers(f"org.deskbridge.{event.type.value}", event.event_id, source)
        return topic, key, event.model_dump_json().encode(), headers

    async def publish(self, event: Event, source: str) -> None:
        await self.send(*self._routed(event, source))

    async def publish_many(self, events: Sequence[Event], source: str) -> None:
        """Hands every event to the producer, then waits for all acknowledgements together: one round
        trip for a batch instead of one per event (the idempotent producer keeps their order)."""
        await self.publish_traced(tracing.in_current_context(events), source)

    async def publish_traced(self, events: Sequence[tuple[Event, Context]], source: str) -> None:
        """publish_many() with each event in the trace context it was made in (a consumed record's)."""
        if not events:
            return
        producer = await self._ready()
        try:
            async with asyncio.timeout(self._timeout_s):
                with contextlib.ExitStack() as spans:
                    sends, pending = [], []
                    for event, context in events:
                        topic, key, value, headers = self._routed(event, source)
                        sent = spans.enter_context(tracing.sending(topic, key, event.event_id, context))
                        headers += sent.headers
                        pending.append(await producer.send(topic, value, key=key.encode(), headers=headers))
                        sends.append(sent)
                    for sent, metadata in zip(sends, await asyncio.gather(*pending), strict=True):
                        sent.acked(metadata.partition, metadata.offset)
        except (TimeoutError, KafkaError) as exc:
            raise BrokerUnavailable("Kafka did not acknowledge the events in time") from exc

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None


async def commit_audited(
    session: AsyncSession, publisher: EventPublisher, events: Sequence[Event], source: str
) -> None:
    """A change lands only once its audit events are in Kafka: flush first so constraint errors surface
    before anything is announced, then publish (Kafka down: 503, nothing committed), then commit."""
    await session.flush()
    await publisher.publish_many(events, source)
    await session.commit()
