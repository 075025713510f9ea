"""How a service reaches Kafka and who it is there, topic names and who may do what with them, the
idempotent producer and CloudEvents-style record headers, shared by all services."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, UnknownTopicOrPartitionError, for_code
from aiokafka.protocol.admin import CreateAclsRequest_v1, DescribeAclsRequest
from aiokafka.protocol.api import Request
from opentelemetry.context import Context
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.events import Event
from services.platform import tracing
from services.platform.errors import BrokerUnavailable
from services.platform.settings import Settings

MAX_RECORD_BYTES = 2 * 1024 * 1024 + 64 * 1024  # an envelope at its limit plus headers


@dataclass(frozen=True)
class KafkaAccess:
    """Where the brokers are and who this client is to them: mutual TLS with its own certificate, whose
    subject is the identity the brokers' ACLs grant rights to, or plaintext to a broker open to anyone."""

    bootstrap: str
    tls: ssl.SSLContext | None = None

    @classmethod
    def of(cls, settings: Settings) -> KafkaAccess:
        if settings.kafka_security_protocol == "PLAINTEXT":
            return cls(settings.kafka_bootstrap)
        ca, cert, key = settings.kafka_ca_file, settings.kafka_cert_file, settings.kafka_key_file
        if ca is None or cert is None or key is None:
            raise ValueError("Kafka over SSL needs DESKBRIDGE_KAFKA_CA_FILE, _CERT_FILE and _KEY_FILE")
        return cls.mutual_tls(settings.kafka_bootstrap, ca, cert, key)

    @classmethod
    def mutual_tls(cls, bootstrap: str, ca: Path, cert: Path, key: Path) -> KafkaAccess:
        """TLS checking the brokers against `ca` (and the address dialled), presenting `cert`."""
        context = ssl.create_default_context(cafile=str(ca))
        context.load_cert_chain(str(cert), str(key))
        return cls(bootstrap, context)

    def client_args(self) -> dict[str, Any]:
        """The keyword arguments every aiokafka producer, consumer and admin client is built with."""
        return {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": "PLAINTEXT" if self.tls is None else "SSL",
            "ssl_context": self.tls,
        }


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
    def events(self) -> str:
        """The gateway's own notice events (fetched, acknowledged, erased, refused at the door), apart
        from the deliveries topic, which only ingest writes."""
        return f"{self.prefix}events.v1"

    @property
    def admin(self) -> str:
        return f"{self.prefix}admin.v1"

    def all(self) -> list[str]:
        return [self.notices, self.dead_letters, self.deliveries, self.events, self.admin]

    def group(self, service: str) -> str:
        """The consumer group of a service (ingest, audit)."""
        return f"{self.prefix}deskbridge-{service}"


# What each service identity may do (docs/deploy.md, deploy/k8s/kafka-users.yaml): (resource type, name,
# operations), resource type "topic" or "group". Nothing else is allowed: not creating topics, not
# altering the cluster. The idempotent producer needs no cluster right: Write on a topic suffices (KIP-679).
Grant = tuple[str, str, tuple[str, ...]]
WRITE, READ = ("Write", "Describe"), ("Read", "Describe")


def grants(topics: Topics) -> dict[str, list[Grant]]:
    """Each service's grants on these topics (their names carry the prefix, so tests' topics get theirs)."""
    return {
        "gateway": [
            ("topic", topics.notices, WRITE),  # submissions and recalls
            ("topic", topics.events, WRITE),
            ("topic", topics.admin, WRITE),  # agencies, keys, credentials, webhook replays
            ("topic", topics.deliveries, READ),  # wakes waiting inboxes (no group)
        ],
        "ingest": [
            ("topic", topics.notices, READ),
            ("group", topics.group("ingest"), ("Read",)),
            # delivered, rejected, expired, escalated, recalled, fetched by webhook
            ("topic", topics.deliveries, WRITE),
            ("topic", topics.dead_letters, WRITE),
            ("topic", topics.admin, WRITE),  # parked webhooks
        ],
        "audit": [
            *(("topic", topic, READ) for topic in topics.all()),
            ("group", topics.group("audit"), ("Read",)),
        ],
    }


def principal(service: str) -> str:
    """A service's Kafka identity: the subject of its client certificate (as Strimzi's KafkaUser names it)."""
    return f"User:CN=deskbridge-{service}"


# Kafka's protocol codes (org.apache.kafka.common.acl / resource): aiokafka has no ACL API, only the request.
_RESOURCE = {"topic": 2, "group": 3}
_OPERATION = {"Read": 3, "Write": 4, "Describe": 8}
_ANY, _LITERAL, _ALLOW = 1, 3, 3


class _CreateAcls(Request[CreateAclsRequest_v1]):  # type: ignore[misc]  # aiokafka.protocol is untyped
    API_KEY = 30

    def __init__(self, creations: list[tuple[int, str, int, str, str, int, int]]) -> None:
        self.creations = creations

    def build(self, request_struct_class: type[CreateAclsRequest_v1]) -> CreateAclsRequest_v1:
        return request_struct_class(self.creations)


async def create_acls(admin: AIOKafkaAdminClient, topics: Topics) -> None:
    """Each service's grants on these topics; granting again what is granted changes nothing."""
    creations = [
        (_RESOURCE[kind], name, _LITERAL, principal(service), "*", _OPERATION[operation], _ALLOW)
        for service, service_grants in grants(topics).items()
        for kind, name, operations in service_grants
        for operation in operations
    ]
    response = await admin._send_request(_CreateAcls(creations))  # noqa: SLF001 (no public API for it)
    for error_code, message in response.creation_responses:
        if error_code:
            raise for_code(error_code)(message)
    # The controller has them now; each broker applies them a moment later, and a client asking that
    # broker before would be refused. So: until every broker lists them.
    wanted = set(creations)
    everything = DescribeAclsRequest(_ANY, None, _ANY, None, None, _ANY, _ANY)
    async with asyncio.timeout(30):
        for broker in admin._client.cluster.brokers():  # noqa: SLF001
            while True:
                listed = await admin._send_request(everything, broker.nodeId)  # noqa: SLF001
                seen = {
                    (kind, name, pattern, *acl)
                    for kind, name, pattern, acls in listed.resources
                    for acl in acls
                }
                if wanted <= seen:
                    break
                await asyncio.sleep(0.05)


async def await_topics(access: KafkaAccess, names: Sequence[str]) -> None:
    """Returns once every named topic exists (and this identity may see it); raises a KafkaError if not."""
    admin = AIOKafkaAdminClient(**access.client_args())
    await admin.start()
    try:
        missing = set(names) - set(await admin.list_topics())
    finally:
        await admin.close()
    if missing:
        raise UnknownTopicOrPartitionError(f"topics not there yet: {', '.join(sorted(missing))}")


async def create_topics(access: KafkaAccess, topics: Topics, partitions: int = 3) -> None:
    """Idempotent: topics that exist already are left as they are, and on a broker that checks ACLs
    each service identity gets its grants on them. Only an administrator identity may do this. Each
    partition gets three replicas, or one per broker on a smaller cluster (aiokafka cannot ask for the
    broker's default)."""
    admin = AIOKafkaAdminClient(**access.client_args())
    await admin.start()
    try:
        if access.tls is not None:
            await create_acls(admin, topics)
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


def make_producer(access: KafkaAccess, client_id: str, request_timeout_ms: int = 10_000) -> AIOKafkaProducer:
    """acks=all on an idempotent producer: a send that returns is on every in-sync replica, once."""
    return AIOKafkaProducer(
        **access.client_args(),
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        max_request_size=MAX_RECORD_BYTES,
        # An envelope is ~12 KB: the 16 KiB default batch holds one, so every send was its own request.
        max_batch_size=1024 * 1024,
        request_timeout_ms=request_timeout_ms,
        # No lingering: a lone send (a flash notice, its delivery, its fetch) goes at once, some 2.3 ms
        # sooner at each of those three hops. Sends still share requests: what arrives while one is in
        # flight to the broker waits for it (one at a time), and publish_many hands over its events
        # before the producer runs. Measured: flash notice to a waiting long-poll 33 against 37-45 ms
        # median; CPU per notice under load within this machine's noise of lingering 2 ms.
        linger_ms=0,
    )


def record_time(record: ConsumerRecord[bytes, bytes]) -> datetime:
    """When the broker appended the record (topics use LogAppendTime)."""
    return datetime.fromtimestamp(record.timestamp / 1000, UTC)


# What ingest adds to a dead letter besides the CloudEvents attributes: why it refused the record and where
# the record was (the audit consumer reads them back; the AsyncAPI document describes them).
DLQ_REASON, DLQ_DETAIL = "dlq_reason", "dlq_detail"
DLQ_TOPIC, DLQ_PARTITION, DLQ_OFFSET = "dlq_topic", "dlq_partition", "dlq_offset"


def ce_type(kind: str) -> str:
    """The CloudEvents type of a record about `kind` (an event type such as notice.submitted)."""
    return f"org.deskbridge.{kind}"


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
    while Kafka is down and answer 503 until it returns. `notice_events`: the topic its notice.* events
    go to (each service writes its own: ingest the deliveries topic, the gateway the events topic);
    every other event goes to the admin topic."""

    def __init__(
        self,
        access: KafkaAccess,
        client_id: str,
        topics: Topics,
        timeout_s: float,
        notice_events: str | None = None,
    ) -> None:
        self.topics = topics
        self.notice_events = notice_events or topics.deliveries
        self._access = access
        self._client_id = client_id
        self._timeout_s = timeout_s
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def _ready(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                producer = make_producer(self._access, self._client_id, int(self._timeout_s * 1000))
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
        topic = self.notice_events if event.type.value.startswith("notice.") else self.topics.admin
        key = event.case_ref or event.agency or event.actor
        headers = cloud_headers(ce_type(event.type.value), event.event_id, source)
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
