"""Smoke tests for the test infrastructure itself: real Kafka broker and throwaway PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from devstack.kafka import KafkaBroker, ensure_jars, free_port
from devstack.processes import spawn_child
from services.platform.kafka import KafkaAccess
from tests.support.fixtures import REPO_ROOT
from tests.support.postgres import PostgresCluster


async def _create_topic(kafka: KafkaAccess, name: str, partitions: int = 1) -> None:
    admin = AIOKafkaAdminClient(**kafka.client_args())
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name=name, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()


async def _produce(kafka: KafkaAccess, topic: str, *values: bytes) -> None:
    producer = AIOKafkaProducer(**kafka.client_args(), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=b"k")
    finally:
        await producer.stop()


async def _consume(kafka: KafkaAccess, topic: str, count: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic, **kafka.client_args(), auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        out: list[bytes] = []
        while len(out) < count:
            batches = await consumer.getmany(timeout_ms=10_000)
            if not batches:
                break
            out.extend(msg.value for msgs in batches.values() for msg in msgs if msg.value is not None)
        return out
    finally:
        await consumer.stop()


async def test_kafka_produce_consume(kafka_broker: KafkaBroker, topic_prefix: str) -> None:
    topic = f"{topic_prefix}infra"
    await _create_topic(kafka_broker.access(), topic, partitions=3)
    await _produce(kafka_broker.access(), topic, b"one", b"two")
    assert await _consume(kafka_broker.access(), topic, 2) == [b"one", b"two"]


async def test_kafka_rejects_unknown_topic(kafka_broker: KafkaBroker, topic_prefix: str) -> None:
    # auto.create.topics.enable=false: metadata for a never-created topic must stay empty.
    admin = AIOKafkaAdminClient(**kafka_broker.access().client_args())
    await admin.start()
    try:
        assert f"{topic_prefix}nope" not in await admin.list_topics()
    finally:
        await admin.close()


async def test_kafka_data_survives_restart_and_crash(tmp_path: Path) -> None:
    # A private broker (open plaintext): stopping/killing the session broker would disturb other tests.
    broker = KafkaBroker(
        jar_dir=ensure_jars(REPO_ROOT / "deploy" / "kafka"),
        data_dir=tmp_path / "kafka",
        port=free_port(),
        controller_port=free_port(),
        heap="256m",
    )
    topic = "restart"
    with broker:
        await _create_topic(broker.access(), topic)
        await _produce(broker.access(), topic, b"before-stop")
        broker.stop()
        assert not broker.is_running()
        broker.start()
        await _produce(broker.access(), topic, b"before-kill")
        broker.kill()  # acked records are in the page cache, so a JVM crash must not lose them
        broker.start()
        assert await _consume(broker.access(), topic, 2) == [b"before-stop", b"before-kill"]
    assert not broker.is_running()


async def test_postgres_accepts_async_connections(pg_cluster: PostgresCluster) -> None:
    db = f"infra_{uuid.uuid4().hex[:8]}"
    url = pg_cluster.create_database(db)
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
            assert (await conn.execute(text("SELECT current_database()"))).scalar_one() == db
    finally:
        await engine.dispose()
    conn2 = await asyncpg.connect(pg_cluster.dsn(db))
    try:
        assert await conn2.fetchval("SELECT 1") == 1
    finally:
        await conn2.close()


async def test_postgres_survives_crash() -> None:
    # Private cluster, so the kill can't break the session one.
    with PostgresCluster() as cluster:
        conn = await asyncpg.connect(cluster.dsn())
        await conn.execute("CREATE TABLE t (v int); INSERT INTO t VALUES (42)")
        await conn.close()
        cluster.kill()
        assert not cluster.is_running()
        cluster.start()
        conn = await asyncpg.connect(cluster.dsn())
        try:
            assert await conn.fetchval("SELECT v FROM t") == 42
        finally:
            await conn.close()
    assert not cluster.base_dir.exists()


# A test run in miniature: starts a broker and a database the way the session fixtures do, and waits.
_RUN = """
import sys, time
from pathlib import Path
from devstack.kafka import KafkaBroker, ensure_jars, free_port
from tests.support.fixtures import REPO_ROOT
from tests.support.postgres import PostgresCluster

broker = KafkaBroker(
    jar_dir=ensure_jars(REPO_ROOT / "deploy" / "kafka"),
    data_dir=Path(sys.argv[1]),
    port=free_port(),
    controller_port=free_port(),
    heap="256m",
)
broker.start(timeout=120)
cluster = PostgresCluster()
cluster.start()
print(broker.pid, cluster.pid, cluster.base_dir, flush=True)
time.sleep(600)
"""


def _group_alive(pgid: int) -> bool:
    """Whether any process of group `pgid` runs (a zombie no one has reaped yet does not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited while we looked
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def test_a_killed_run_takes_its_broker_and_database_with_it(tmp_path: Path) -> None:
    """SIGKILL runs no `finally` and no fixture teardown: the kernel must end the Kafka JVM and the
    postmaster (with its backends, all in its process group) when the process that started them dies."""
    run = spawn_child(
        [sys.executable, "-c", _RUN, str(tmp_path / "kafka")], cwd=REPO_ROOT, stdout=subprocess.PIPE
    )
    groups: list[int] = []
    pg_dir: str | None = None
    try:
        assert run.stdout is not None
        line = run.stdout.readline().decode()
        assert line, f"the run exited with {run.wait()} before its broker and database were up"
        jvm, postmaster, pg_dir = line.split()
        groups = [int(jvm), int(postmaster)]
        assert all(_group_alive(pgid) for pgid in groups)
        run.send_signal(signal.SIGKILL)
        run.wait()
        deadline = time.monotonic() + 15
        while any(_group_alive(pgid) for pgid in groups) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [pgid for pgid in groups if _group_alive(pgid)] == [], "left running after the run died"
    finally:
        run.kill()
        run.wait()
        for pgid in groups:  # whatever the kernel did not kill, lest a failure leave it running
            if _group_alive(pgid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
        if pg_dir is not None:
            shutil.rmtree(pg_dir, ignore_errors=True)
