"""The floor's parts, fixed so the floor does not move with deskbridge's own code: raw Ed25519 verifies of
the envelope's outer signature, the same envelope bytes through a raw aiokafka producer (acks=all) and
consumer on the same broker, and the rows a notice needs written by COPY into tables of a fixed shape on
the same PostgreSQL. Each part gives its rate and the CPU the whole machine spent on each item. Beside them,
not in the floor, the same envelope POSTed to a bare FastAPI route (bench/bare.py): what HTTP alone costs."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import timeit
import uuid
from base64 import urlsafe_b64decode
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.profile import machine_busy_seconds
from bench.stack import Service, wait_http
from bench.stats import Figure
from devstack.kafka import free_port
from devstack.processes import spawn_child
from services.platform.database import ROOT
from services.platform.kafka import KafkaAccess, Topics, create_topics, make_producer

# The design checks the outer signature three times: at the gateway, in ingest and in the audit service
# (services/notices/admission.py), so that no stage trusts the one before it. The floor counts as
# many as the design keeps, and never fewer than two.
OUTER_VERIFIES = 3
PARTITIONS = 3  # as the services' topics (Settings.topic_partitions)
RAW_PRODUCE = "produce (raw: acks=all, idempotent, linger 2 ms, 1 MiB batches)"
GATEWAY_PRODUCE = "produce (make_producer: the gateway's settings)"
CONSUME = "consume (raw)"
NOTICES_PER_COPY = 100  # notices whose rows go in one transaction (two COPYs)


@dataclass(frozen=True)
class Part:
    """A part measured on the whole machine: items/s (wall clock), and the CPU milliseconds the machine
    spent per item (every process and the kernel, from /proc/stat) during the same runs."""

    rate: Figure
    cpu_ms: Figure
    server_cpu_ms: Figure | None = None  # the serving process's alone, where the part has one


def _signed(raw: bytes) -> tuple[bytes, bytes]:
    """The outer JWS's signing input and signature, straight from the envelope's JSON."""
    outer = json.loads(raw)
    signature = urlsafe_b64decode(outer["signature"] + "=" * (-len(outer["signature"]) % 4))
    return f"{outer['protected']}.{outer['payload']}".encode(), signature


def ed25519_verify_us(raw: bytes, key: Ed25519PublicKey, number: int, repeats: int) -> Figure:
    """CPU microseconds of one Ed25519 verify of the envelope's outer signature over the envelope's bytes,
    with `cryptography` alone (this process's CPU time, which a busy machine disturbs far less than wall
    time)."""
    message, signature = _signed(raw)
    key.verify(signature, message)  # raises if these are not the signed bytes
    runs = timeit.Timer(lambda: key.verify(signature, message), timer=time.process_time).repeat(
        repeat=repeats, number=number
    )
    return Figure.of_durations([seconds / number * 1e6 for seconds in runs])


def raw_producer(access: KafkaAccess) -> AIOKafkaProducer:
    """Fixed settings, deskbridge's guarantees (acks=all, idempotent) with batches that hold many ~12 KB
    envelopes; only the connection (address, TLS identity) comes from deskbridge's settings."""
    return AIOKafkaProducer(
        **access.client_args(),
        client_id="bench-raw",
        acks="all",
        enable_idempotence=True,
        max_request_size=2 * 1024 * 1024,
        linger_ms=2,
        max_batch_size=1024 * 1024,
    )


async def _metered(work: Callable[[], Awaitable[int]]) -> tuple[float, float]:
    """(items/s, machine CPU ms per item) of `work`, which returns how many items it handled."""
    busy, started = machine_busy_seconds(), time.perf_counter()
    items = await work()
    seconds, cpu = time.perf_counter() - started, machine_busy_seconds() - busy
    return items / seconds, 1000 * cpu / items


def _part(samples: list[tuple[float, float]], served: list[float] | None = None) -> Part:
    """From (items/s, machine CPU ms per item) runs and, where there is one, the server's CPU ms per item."""
    return Part(
        Figure.of_rates([r for r, _ in samples]),
        Figure.of_durations([c for _, c in samples]),
        Figure.of_durations(served) if served is not None else None,
    )


async def raw_kafka(
    access: KafkaAccess, prefix: str, envelope: bytes, messages: int, repeats: int
) -> dict[str, Part]:
    """Producers sending the envelope as fast as they are fed, and a consumer reading the raw producer's
    records back; each repeat uses fresh topics. The make_producer line is for comparison only."""
    samples: dict[str, list[tuple[float, float]]] = {RAW_PRODUCE: [], GATEWAY_PRODUCE: [], CONSUME: []}
    for _ in range(repeats):
        for name, producer in (
            (GATEWAY_PRODUCE, make_producer(access, "bench-gateway-settings")),
            (RAW_PRODUCE, raw_producer(access)),
        ):
            topics = Topics(f"{prefix}raw{uuid.uuid4().hex[:6]}.")
            await create_topics(access, topics, PARTITIONS)
            samples[name].append(await _produce_all(producer, topics.notices, envelope, messages))
        samples[CONSUME].append(await _consume_all(access, topics.notices, messages))
    return {name: _part(values) for name, values in samples.items()}


async def _produce_all(
    producer: AIOKafkaProducer, topic: str, envelope: bytes, messages: int
) -> tuple[float, float]:
    await producer.start()
    try:
        for partition in range(PARTITIONS):  # leaders elected and metadata known before the clock starts
            await producer.send_and_wait(topic, envelope, partition=partition)

        async def send_all() -> int:
            pending = [
                await producer.send(topic, envelope, key=f"KD-2025-{i % 97:04d}".encode())
                for i in range(messages)
            ]
            await asyncio.gather(*pending)
            return messages

        return await _metered(send_all)
    finally:
        await producer.stop()


async def _consume_all(access: KafkaAccess, topic: str, messages: int) -> tuple[float, float]:
    consumer = AIOKafkaConsumer(
        **access.client_args(),
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=16 * 1024 * 1024,
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)

        async def read_all() -> int:
            seen = -PARTITIONS  # the warm-up records
            async with asyncio.timeout(120):
                while seen < messages:
                    for records in (await consumer.getmany(timeout_ms=200, max_records=1000)).values():
                        seen += len(records)
            return messages

        return await _metered(read_all)
    finally:
        await consumer.stop()


# Fixed shapes, not deskbridge's tables (which change with its code): an inbox row as the design needs one
# (its own sequence, the notice, the recipient, a state, a time; one per notice and recipient; read by
# recipient in sequence order) and an audit entry (its place in the log, the event's identity, what and
# whom it concerns, and the hash chain).
FLOOR_TABLES = (
    "CREATE TABLE bench_floor_inbox (seq bigserial PRIMARY KEY, notice_id uuid NOT NULL, "
    "recipient text NOT NULL, state text NOT NULL, delivered_at timestamptz NOT NULL DEFAULT now(), "
    "UNIQUE (notice_id, recipient))",
    "CREATE INDEX ON bench_floor_inbox (recipient, seq)",
    "CREATE TABLE bench_floor_audit (seq bigint PRIMARY KEY, event_id text NOT NULL UNIQUE, "
    "event_type text NOT NULL, occurred_at timestamptz NOT NULL, actor text NOT NULL, agency text NOT NULL, "
    "notice_id uuid, details jsonb NOT NULL, prev_hash bytea NOT NULL, entry_hash bytea NOT NULL)",
)
INBOX_COLUMNS = ("notice_id", "recipient", "state")
Batch = tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]  # inbox rows, audit rows
AUDIT_COLUMNS = (
    "seq",
    "event_id",
    "event_type",
    "occurred_at",
    "actor",
    "agency",
    "notice_id",
    "details",
    "prev_hash",
    "entry_hash",
)


def _rows(notices: int, recipients: int, seq: int) -> Batch:
    """One inbox row per recipient, and one audit row per event (the submission, a delivery per
    recipient), for `notices` notices; audit sequence numbers from `seq` + 1."""
    inbox: list[tuple[Any, ...]] = []
    audit: list[tuple[Any, ...]] = []
    now, chain = datetime.now(UTC), bytes(32)
    for _ in range(notices):
        notice = uuid.uuid4()
        readers = [f"bench-{r + 1:02d}" for r in range(recipients)]
        inbox += [(notice, reader, "delivered") for reader in readers]
        events = [("notice.submitted", "kr-desk")] + [("notice.delivered", reader) for reader in readers]
        for kind, agency in events:
            seq += 1
            entry = uuid.uuid4().bytes * 2
            details = json.dumps({"kafka_partition": 0, "kafka_offset": seq})
            audit.append(
                (seq, f"floor-{seq}", kind, now, "deskbridge", agency, notice, details, chain, entry)
            )
            chain = entry
    return inbox, audit


async def copy_rows(engine: AsyncEngine, notices: int, recipients: int, repeats: int) -> Part:
    """Notices/s whose rows (`recipients` inbox rows and 1 + `recipients` audit rows) are written with
    asyncpg's COPY (copy_records_to_table), NOTICES_PER_COPY notices to a transaction, on fresh tables."""
    samples = []
    async with engine.connect() as connection:
        raw = await connection.get_raw_connection()
        pg = raw.driver_connection
        assert pg is not None
        await pg.execute("DROP TABLE IF EXISTS bench_floor_inbox, bench_floor_audit")
        try:
            for _ in range(repeats):
                for statement in FLOOR_TABLES:
                    await pg.execute(statement)
                batches = [
                    _rows(NOTICES_PER_COPY, recipients, i * NOTICES_PER_COPY * (1 + recipients))
                    for i in range(max(1, notices // NOTICES_PER_COPY))
                ]  # built before the clock starts: the floor is the database's work

                samples.append(await _metered(partial(_copy_all, pg, batches)))
                await pg.execute("DROP TABLE bench_floor_inbox, bench_floor_audit")
        finally:
            await pg.execute("DROP TABLE IF EXISTS bench_floor_inbox, bench_floor_audit")
    return _part(samples)


async def _copy_all(pg: Any, batches: list[Batch]) -> int:
    """Each batch's inbox rows and audit rows by COPY, in a transaction; returns the notices written."""
    for inbox, audit in batches:
        async with pg.transaction():
            await pg.copy_records_to_table("bench_floor_inbox", records=inbox, columns=INBOX_COLUMNS)
            await pg.copy_records_to_table("bench_floor_audit", records=audit, columns=AUDIT_COLUMNS)
    return len(batches) * NOTICES_PER_COPY


async def bare_http(envelope: bytes, requests: int, connections: int, repeats: int, log: Path) -> Part:
    """The envelope POSTed `requests` times a run to a bare FastAPI route under uvicorn (bench/bare.py, its
    output to `log`) by the load generator's client (aiohttp, `connections` at once, as load.Senders):
    HTTP's cost per request to the machine (server, client and kernel) and to the server alone."""
    port = free_port()
    with log.open("ab") as out:
        server = Service(
            "the bare HTTP route",
            spawn_child(
                [sys.executable, "-m", "bench.bare", str(port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            ),
            log,
        )
    samples: list[tuple[float, float]] = []
    served: list[float] = []
    try:
        await asyncio.to_thread(wait_http, f"http://127.0.0.1:{port}/docs", server)
        async with aiohttp.ClientSession(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Content-Type": "application/json"},
            connector=aiohttp.TCPConnector(limit=connections),
        ) as session:

            async def post(times: int) -> None:
                for _ in range(times):
                    async with session.post("/v1/envelopes", data=envelope) as response:
                        if response.status != 202:
                            raise RuntimeError(f"the bare route answered {response.status}")
                        await response.read()

            each = max(1, requests // connections)

            async def post_all() -> int:
                await asyncio.gather(*(post(each) for _ in range(connections)))
                return each * connections

            for _ in range(repeats):
                before = server.cpu_seconds()
                samples.append(await _metered(post_all))
                served.append(1000 * (server.cpu_seconds() - before) / (each * connections))
    finally:
        server.process.terminate()
        try:
            server.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
    return _part(samples, served)
