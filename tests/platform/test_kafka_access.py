"""Kafka closed to strangers: the session broker speaks only TLS with a client certificate from its CA, and
each identity may do what its ACLs grant (services/platform/kafka.py grants), nothing more."""

from __future__ import annotations

import asyncio
import ssl

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    KafkaError,
    TopicAuthorizationFailedError,
)
from typer.testing import CliRunner

from devstack.kafka import KafkaBroker
from services.cli.main import app
from services.platform.consumer import ready_topics
from services.platform.kafka import KafkaAccess, Topics, create_topics, make_producer
from services.platform.settings import Settings

# An identity that may write no topic at all is refused its idempotent producer's id before any write.
REFUSED = (TopicAuthorizationFailedError, ClusterAuthorizationFailedError)


@pytest.fixture
async def topics(kafka_broker: KafkaBroker, topic_prefix: str) -> Topics:
    made = Topics(topic_prefix)
    await create_topics(kafka_broker.access(), made)
    return made


async def _write(kafka: KafkaAccess, topic: str) -> int:
    producer = make_producer(kafka, "tests-acl", request_timeout_ms=5000)
    try:
        await producer.start()
        return (await producer.send_and_wait(topic, b"{}", key=b"KD-2025-0001")).offset
    finally:
        await producer.stop()


async def test_a_plaintext_client_cannot_even_connect(kafka_broker: KafkaBroker, topics: Topics) -> None:
    with pytest.raises(KafkaConnectionError):
        await _write(KafkaAccess(kafka_broker.bootstrap), topics.notices)


async def test_tls_without_a_client_certificate_is_refused(kafka_broker: KafkaBroker, topics: Topics) -> None:
    """The broker's certificate checks out, but the broker wants the client's: the handshake fails."""
    assert kafka_broker.certificates is not None
    anonymous = ssl.create_default_context(cafile=str(kafka_broker.certificates.ca))
    with pytest.raises(KafkaConnectionError):
        await _write(KafkaAccess(kafka_broker.bootstrap, anonymous), topics.notices)


async def test_only_the_gateway_writes_the_notices_topic(kafka_broker: KafkaBroker, topics: Topics) -> None:
    assert await _write(kafka_broker.access("gateway"), topics.notices) >= 0
    with pytest.raises(TopicAuthorizationFailedError):
        await _write(kafka_broker.access("ingest"), topics.notices)
    for stranger in ("audit", "intruder"):
        with pytest.raises(REFUSED):
            await _write(kafka_broker.access(stranger), topics.notices)


async def test_only_ingest_writes_deliveries_and_dead_letters(
    kafka_broker: KafkaBroker, topics: Topics
) -> None:
    for topic in (topics.deliveries, topics.dead_letters):
        assert await _write(kafka_broker.access("ingest"), topic) >= 0
        for other in ("gateway", "audit", "intruder"):
            with pytest.raises(REFUSED):
                await _write(kafka_broker.access(other), topic)


async def test_audit_writes_nothing(kafka_broker: KafkaBroker, topics: Topics) -> None:
    for topic in topics.all():
        with pytest.raises(REFUSED):
            await _write(kafka_broker.access("audit"), topic)


async def _read_as(kafka: KafkaAccess, topic: str, group: str) -> None:
    consumer = AIOKafkaConsumer(topic, **kafka.client_args(), group_id=group, auto_offset_reset="earliest")
    try:
        await consumer.start()
        await consumer.getmany(timeout_ms=3000)
        await consumer.commit({TopicPartition(topic, 0): 0})
    finally:
        await consumer.stop()


async def test_a_consumer_joins_its_own_group_only(kafka_broker: KafkaBroker, topics: Topics) -> None:
    await _read_as(kafka_broker.access("ingest"), topics.notices, topics.group("ingest"))
    with pytest.raises(GroupAuthorizationFailedError):
        await _read_as(kafka_broker.access("ingest"), topics.notices, topics.group("audit"))
    with pytest.raises(KafkaError):  # a topic it may not read: not even its metadata
        await _read_as(kafka_broker.access("intruder"), topics.notices, topics.group("ingest"))


def test_kafka_setup_makes_the_topics_and_grants_as_the_administrator(
    kafka_broker: KafkaBroker, topic_prefix: str
) -> None:
    """`deskbridge kafka setup` (Compose's kafka-setup): after it, the gateway may write its topic."""
    assert kafka_broker.certificates is not None
    environment = {
        **kafka_broker.certificates.settings("admin"),
        "DESKBRIDGE_KAFKA_BOOTSTRAP": kafka_broker.bootstrap,
        "DESKBRIDGE_TOPIC_PREFIX": topic_prefix,
    }
    done = CliRunner().invoke(app, ["kafka", "setup"], env=environment)
    assert done.exit_code == 0, done.output
    topics = Topics(topic_prefix)
    assert topics.events in done.output
    assert asyncio.run(_write(kafka_broker.access("gateway"), topics.events)) >= 0
    gateway = {**environment, **kafka_broker.certificates.settings("gateway")}
    refused = CliRunner().invoke(app, ["kafka", "setup"], env=gateway)
    # Only the administrator may make topics and grant rights; the refusal is one line that says so.
    assert refused.exit_code == 1, refused.output
    assert "error: Kafka refused" in refused.output and "Traceback" not in refused.output


async def test_a_service_waits_for_its_topics_and_never_makes_them(
    kafka_broker: KafkaBroker, topic_prefix: str
) -> None:
    """Started before the administrator made the topics, ingest waits for them instead of failing."""
    assert kafka_broker.certificates is not None
    settings = Settings(
        **kafka_broker.certificates.fields("ingest"),
        kafka_bootstrap=kafka_broker.bootstrap,
        topic_prefix=topic_prefix,
    )
    stop = asyncio.Event()
    waiting = asyncio.create_task(ready_topics(settings, stop, "ingest"))
    await asyncio.sleep(1.5)
    assert not waiting.done()
    await create_topics(kafka_broker.access(), Topics(topic_prefix))
    assert await asyncio.wait_for(waiting, 30) == Topics(topic_prefix)
