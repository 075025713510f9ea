"""Real parts for every integration test: one Kafka broker and one PostgreSQL cluster per session,
a fresh database and topic prefix per test, and the services running on loopback HTTP."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from devstack.certs import ADMIN, Certificates
from devstack.kafka import KafkaBroker, free_port
from services.audit.app import create_app as create_audit_app
from services.audit.main import run_consumer
from services.cli.demo import bootstrap
from services.cli.profiles import Profile
from services.delivery.models import NoticeRow
from services.envelope.keys import AgencyKeys
from services.envelope.receipts import make_receipt
from services.gateway.app import create_app as create_gateway_app
from services.ingest.main import run as run_ingest
from services.metrics.registry import Metrics
from services.platform.database import make_engine, make_sessionmaker, upgrade
from services.platform.kafka import EventPublisher, KafkaAccess, Topics, create_topics, header_value
from services.platform.logs import configure
from services.platform.settings import Settings
from services.transparency.storage import TreeMemory
from tests.support.fixtures import *  # noqa: F403
from tests.support.postgres import PostgresCluster

T = TypeVar("T")
configure("info")


async def eventually(check: Callable[[], Awaitable[T]], within: float = 30.0, every: float = 0.1) -> T:
    """Polls until `check` returns a truthy value; the last falsy value fails the test."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {within} s (last value: {value!r})")
        await asyncio.sleep(every)


async def migrated_database(kind: str, tmp_path: Path, pg_cluster: PostgresCluster) -> str:
    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'deskbridge.db'}"
    else:
        name = f"t_{uuid.uuid4().hex[:12]}"
        pg_cluster.create_database(name)
        url = pg_cluster.url(name)
    await asyncio.to_thread(upgrade, url)
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path, pg_cluster: PostgresCluster) -> str:
    """A migrated database, once on each engine: for what must hold on both."""
    return await migrated_database(request.param, tmp_path, pg_cluster)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(database_url)
    yield engine
    await engine.dispose()


@dataclass
class Stack:
    """The running services for one test, with the demo agencies enrolled. `settings` and `kafka` are
    the administrator's (a super user on the broker); each service runs as its own Kafka identity."""

    settings: Settings
    kafka: KafkaAccess
    home: Path
    gateway_url: str
    audit_url: str
    sessions: async_sessionmaker[AsyncSession]
    publisher: EventPublisher
    topics: Topics
    identities: Certificates | None = None  # the broker's: each service's client certificate
    _clients: list[httpx.AsyncClient] = field(default_factory=list)

    def environment(self, service: str) -> dict[str, str]:
        """The DESKBRIDGE_* Kafka settings of a service run as a process of its own."""
        assert self.identities is not None
        return {
            "DESKBRIDGE_KAFKA_BOOTSTRAP": self.settings.kafka_bootstrap,
            **self.identities.settings(service),
        }

    def token(self, name: str) -> str:
        return Profile(self.home, name).credential()

    def client(self, name: str | None, audit: bool = False) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.token(name)}"} if name else {}
        client = httpx.AsyncClient(
            base_url=self.audit_url if audit else self.gateway_url, headers=headers, timeout=30
        )
        self._clients.append(client)
        return client


class ServiceTasks:
    """Services as tasks in the test's event loop: uvicorn servers on free ports and consumers."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.servers: list[uvicorn.Server] = []
        self.tasks: list[asyncio.Task[Any]] = []

    async def serve(self, app: Any, port: int) -> str:
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.servers.append(server)
        self.tasks.append(asyncio.create_task(server.serve()))
        await eventually(lambda: _started(server), within=20, every=0.02)
        return f"http://127.0.0.1:{port}"

    def run(self, coroutine: Awaitable[None]) -> None:
        self.tasks.append(asyncio.ensure_future(coroutine))

    async def close(self) -> None:
        self.stop.set()
        for server in self.servers:
            server.should_exit = True
        results = await asyncio.gather(*self.tasks, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        assert not failures, f"a service task failed: {failures!r}"


async def _started(server: uvicorn.Server) -> bool:
    return server.started


def as_service(settings: Settings, kafka_broker: KafkaBroker, name: str) -> Settings:
    """The settings with the Kafka identity of a service (gateway, ingest, audit) or another one."""
    assert kafka_broker.certificates is not None
    return settings.model_copy(update=kafka_broker.certificates.fields(name))


def stack_settings(kafka_broker: KafkaBroker, database_url: str, topic_prefix: str, home: Path) -> Settings:
    """The administrator's settings: as_service gives each service its own identity."""
    assert kafka_broker.certificates is not None
    return Settings(
        **kafka_broker.certificates.fields(ADMIN),
        database_url=database_url,
        kafka_bootstrap=kafka_broker.bootstrap,
        topic_prefix=topic_prefix,
        desk_keys_dir=home / "kr-desk",
        kafka_send_timeout_s=10,
        expiry_sweep_s=0.5,
        rate_limit_per_s=10_000,
        rate_limit_burst=10_000,
        webhook_allow_http=True,
        webhook_dispatch=False,  # webhook tests run their own dispatcher, with a pinned jitter
        webhook_poll_s=0.2,
        webhook_backoff_base_s=0.2,
        webhook_backoff_cap_s=1,
        webhook_max_attempts=3,
        ingest_metrics_port=0,  # the stack fixture opens it on a free port
    )


async def enrol_demo(settings: Settings, home: Path, publisher: EventPublisher) -> None:
    engine = make_engine(settings.database_url)
    async with make_sessionmaker(engine)() as session:
        events = await bootstrap(session, home)
        await session.commit()
    await engine.dispose()
    for event in events:
        await publisher.publish(event, "tests")


@pytest.fixture
async def stack_db(tmp_path: Path, pg_cluster: PostgresCluster) -> str:
    """Integration tests run on PostgreSQL, the production database."""
    return await migrated_database("postgresql", tmp_path, pg_cluster)


@pytest.fixture
async def stack(
    request: pytest.FixtureRequest,
    kafka_broker: KafkaBroker,
    stack_db: str,
    topic_prefix: str,
    tmp_path: Path,
) -> AsyncIterator[Stack]:
    """`@pytest.mark.without_ingest` leaves ingest out, for tests that run it as a process of its own."""
    home = tmp_path / "demo"
    settings = stack_settings(kafka_broker, stack_db, topic_prefix, home)
    # The ports the services really listen on: the console's config.json and CORS origins name them.
    settings = settings.model_copy(
        update={"gateway_port": free_port(), "audit_port": free_port(), "ingest_metrics_port": free_port()}
    )
    changed = request.node.get_closest_marker("settings")
    if changed is not None:
        settings = settings.model_copy(update=changed.kwargs)
    topics = Topics(topic_prefix)
    kafka = KafkaAccess.of(settings)
    await create_topics(kafka, topics, settings.topic_partitions)
    publisher = EventPublisher(kafka, "tests", topics, 10)
    await enrol_demo(settings, home, publisher)
    services = ServiceTasks()
    gateway = create_gateway_app(as_service(settings, kafka_broker, "gateway"))
    gateway_url = await services.serve(gateway, settings.gateway_port)
    audit = as_service(settings, kafka_broker, "audit")
    audit_metrics = Metrics()  # the audit process's: its app serves its consumer's lag
    audit_tree = TreeMemory()  # and its proofs read what its consumer's appends made known
    audit_url = await services.serve(create_audit_app(audit, audit_metrics, audit_tree), settings.audit_port)
    if request.node.get_closest_marker("without_ingest") is None:
        services.run(run_ingest(as_service(settings, kafka_broker, "ingest"), services.stop))
    services.run(run_consumer(audit, services.stop, audit_metrics, audit_tree))
    engine = make_engine(stack_db)
    sessions = make_sessionmaker(engine)
    identities = kafka_broker.certificates
    running = Stack(settings, kafka, home, gateway_url, audit_url, sessions, publisher, topics, identities)
    try:
        yield running
    finally:
        for client in running._clients:
            await client.aclose()
        await services.close()
        await publisher.close()
        await engine.dispose()


async def audited(stack: Stack, event_type: str, **match: Any) -> list[dict[str, Any]]:
    """The audit log's entries of a type (the first 1000), as an auditor reads them; `match` keeps those
    whose fields or details have the given values."""
    auditor = stack.client("auditor", audit=True)
    response = await auditor.get("/v1/audit/events", params={"type": event_type, "limit": 1000})
    assert response.status_code == 200, response.text
    entries = response.json()["entries"]
    return [e for e in entries if all(e.get(k) == v or e["details"].get(k) == v for k, v in match.items())]


async def receipt(stack: Stack, agency: str, notice_id: str) -> dict[str, str]:
    """An ack body: the agency's signed receipt over the notice's envelope hash (as a client makes it)."""
    async with stack.sessions() as session:
        notice = await session.get(NoticeRow, notice_id)
    digest = notice.envelope_sha256 if notice is not None else "0" * 64
    signer = AgencyKeys.load(stack.home / agency).signer()
    return {"receipt": make_receipt(signer, notice_id, digest)}


async def dead_letters(stack: Stack, count: int) -> list[dict[str, str | None]]:
    """The first `count` records of the dead-letter topic: each one's reason, detail and size."""
    consumer = AIOKafkaConsumer(
        stack.topics.dead_letters,
        **stack.kafka.client_args(),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    found: list[dict[str, str | None]] = []
    try:
        async with asyncio.timeout(60):
            while len(found) < count:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for r in records:
                        headers = list(r.headers)
                        found.append(
                            {
                                "reason": header_value(headers, "dlq_reason"),
                                "detail": header_value(headers, "dlq_detail"),
                                "size": str(len(r.value or b"")),
                            }
                        )
    finally:
        await consumer.stop()
    return found


async def records_on(stack: Stack, topic: str) -> int:
    """Records ever written to `topic`: the sum of its partitions' end offsets."""
    consumer = AIOKafkaConsumer(**stack.kafka.client_args(), enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(stack.settings.topic_partitions)]
        return sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()
