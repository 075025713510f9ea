"""Load on the running stack: senders post envelopes sealed beforehand to `POST /v1/envelopes`, and a
notice counts once every recipient's inbox row and every audit entry it causes are in the database."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import aiohttp
import httpx
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.crypto import encryption_key, notice_of
from bench.profile import CpuMeter
from bench.stack import READERS, SENDERS, Stack
from bench.stats import Figure
from schemas.events import EventType
from services.delivery.models import Delivery
from services.delivery.service import encode_cursor
from services.envelope.keys import AgencyKeys, PublicKey
from services.envelope.service import seal_notice
from services.transparency.models import AuditEntry

COUNTED_EVENTS = (EventType.notice_submitted.value, EventType.notice_delivered.value)


@dataclass(frozen=True)
class Sealed:
    notice_id: str
    sender: str
    recipients: int
    raw: bytes


class Keyring:
    """The senders' private keys and the readers' public encryption keys, as the senders hold them."""

    def __init__(self, home: Path) -> None:
        self.senders = {agency: AgencyKeys.load(home / agency) for agency in SENDERS}
        self._public: dict[str, PublicKey] = {}
        self._home = home

    def encryption_key(self, agency: str) -> PublicKey:
        if agency not in self._public:
            self._public[agency] = encryption_key(AgencyKeys.load(self._home / agency))
        return self._public[agency]

    def seal(self, sender: str, recipients: Sequence[str], priority: str = "immediate") -> Sealed:
        notice = notice_of(sender, recipients, priority)
        keys = [self.encryption_key(r) for r in recipients]
        raw = seal_notice(notice, self.senders[sender].signer(), keys)
        return Sealed(str(notice.notice_id), sender, len(recipients), raw)

    def batch(self, count: int, recipients: int) -> list[Sealed]:
        """`count` envelopes from the senders in turn, each to the first `recipients` readers."""
        senders = itertools.cycle(SENDERS)
        return [self.seal(next(senders), READERS[:recipients]) for _ in range(count)]


class Senders:
    """One HTTP client per sending agency, each with its own credential. aiohttp rather than httpx: the
    load generator shares the machine's two cores with the stack, and aiohttp costs a third as much CPU
    per request, which leaves more of them to what is measured."""

    def __init__(self, stack: Stack, connections: int) -> None:
        self.clients = {
            agency: aiohttp.ClientSession(
                base_url=stack.gateway_url,
                headers={
                    "Authorization": f"Bearer {stack.token(agency)}",
                    "Content-Type": "application/json",
                },
                connector=aiohttp.TCPConnector(limit=connections),
                timeout=aiohttp.ClientTimeout(total=120),
            )
            for agency in SENDERS
        }

    async def post(self, sealed: Sealed) -> None:
        """Raises unless the gateway answers 202."""
        async with self.clients[sealed.sender].post("/v1/envelopes", data=sealed.raw) as response:
            if response.status != 202:
                text = await response.text()
                raise RuntimeError(f"POST /v1/envelopes answered {response.status}: {text[:300]}")
            await response.read()

    async def try_post(self, sealed: Sealed) -> str:
        """The answer's status code, or the name of the transport error: for overload, where both happen."""
        try:
            async with self.clients[sealed.sender].post("/v1/envelopes", data=sealed.raw) as response:
                await response.read()
                return str(response.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return type(exc).__name__

    async def close(self) -> None:
        for client in self.clients.values():
            await client.close()


Mark = tuple[int, int]  # the last inbox place and the last audit entry's seq, before a round


async def mark(engine: AsyncEngine) -> Mark:
    async with engine.connect() as connection:
        place = (await connection.execute(select(func.max(Delivery.seq)))).scalar_one()
        entry = (await connection.execute(select(func.max(AuditEntry.seq)))).scalar_one()
    return int(place or 0), int(entry or 0)


async def counts(engine: AsyncEngine, since: Mark) -> tuple[int, int]:
    """(inbox rows, audit entries of submissions and deliveries) written after `since`: each a range of
    its table's primary key, so polling costs the database what the round wrote, not what is stored."""
    async with engine.connect() as connection:
        rows = (
            await connection.execute(
                select(func.count()).select_from(Delivery).where(Delivery.seq > since[0])
            )
        ).scalar_one()
        audited = (
            await connection.execute(
                select(func.count())
                .select_from(AuditEntry)
                .where(AuditEntry.seq > since[1], AuditEntry.event_type.in_(COUNTED_EVENTS))
            )
        ).scalar_one()
    return int(rows), int(audited)


async def until_complete(engine: AsyncEngine, stack: Stack, start: Mark, batch: Sequence[Sealed]) -> float:
    """Polls until every inbox row and audit entry of `batch` exists; returns perf_counter() then.
    Gives up after a minute plus 0.1 s a notice (10 notices/s, far below what the stack does)."""
    rows = sum(s.recipients for s in batch)
    audited = sum(1 + s.recipients for s in batch)
    limit = 60 + len(batch) / 10
    deadline = time.perf_counter() + limit
    while True:
        now = await counts(engine, start)
        if now[0] >= rows and now[1] >= audited:
            return time.perf_counter()
        stack.check_alive()
        if time.perf_counter() > deadline:
            raise RuntimeError(f"after {limit:.0f} s: {now} of {(rows, audited)} inbox rows, audit entries")
        await asyncio.sleep(0.02)


@dataclass(frozen=True)
class Throughput:
    accepted: Figure  # notices/s answered 202 by the gateway
    completed: Figure  # notices/s with every inbox row and audit entry written


async def closed_loop(
    stack: Stack,
    engine: AsyncEngine,
    keyring: Keyring,
    recipients: int,
    count: int,
    senders: int,
    repeats: int,
    meters: Sequence[CpuMeter] = (),
) -> Throughput:
    """`senders` concurrent senders post `count` notices as fast as they are answered, `repeats` times.
    The `meters` are started in their order and stopped in the reverse: each one's window holds the
    next's, and what reading one costs falls outside the windows after it."""
    accepted: list[float] = []
    completed: list[float] = []
    client = Senders(stack, senders)
    try:
        for _ in range(repeats):
            batch = keyring.batch(
                count, recipients
            )  # sealed before the clock starts: their cost is the floor
            start = await mark(engine)
            queue: Iterator[Sealed] = iter(batch)

            async def sender(work: Iterator[Sealed] = queue) -> None:
                for sealed in work:
                    await client.post(sealed)

            for meter in meters:
                meter.start()
            began = time.perf_counter()
            await asyncio.gather(*(sender() for _ in range(senders)))
            answered = time.perf_counter()
            done = await until_complete(engine, stack, start, batch)
            for meter in reversed(meters):
                meter.stop(count)
            accepted.append(count / (answered - began))
            completed.append(count / (done - began))
    finally:
        await client.close()
    return Throughput(Figure.of_rates(accepted), Figure.of_rates(completed))


@dataclass(frozen=True)
class Latency:
    offered: float  # notices/s
    achieved: float  # notices/s completed over the phase
    post: list[float]  # seconds from the scheduled send to the 202
    inbox: list[float]  # seconds from the scheduled send to the last recipient's inbox row
    failed: dict[str, int]  # answers other than 202, by status code or transport error


async def open_loop(
    stack: Stack, engine: AsyncEngine, keyring: Keyring, rate: float, seconds: float, recipients: int
) -> Latency:
    """Sends at a fixed rate whatever the answers (open loop), timing each notice from when it was due to
    be sent, so a stalled server cannot hide its queue by slowing the sender down."""
    batch = keyring.batch(max(1, round(rate * seconds)), recipients)
    client = Senders(stack, 1000)
    start = await mark(engine)
    loop = asyncio.get_running_loop()
    began, wall, clock = loop.time(), time.time(), time.perf_counter()
    due: dict[str, float] = {}
    answered: dict[str, float] = {}
    failed: Counter[str] = Counter()

    async def send(sealed: Sealed, at: float) -> None:
        status = await client.try_post(sealed)
        if status == "202":
            answered[sealed.notice_id] = time.time() - at
        else:
            failed[status] += 1

    try:
        tasks = []
        for i, sealed in enumerate(batch):
            delay = began + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            due[sealed.notice_id] = wall + i / rate
            tasks.append(asyncio.create_task(send(sealed, due[sealed.notice_id])))
        await asyncio.gather(*tasks)
        accepted = [s for s in batch if s.notice_id in answered]
        done = await until_complete(engine, stack, start, accepted)
    finally:
        await client.close()
    delivered = await delivered_at(engine, list(answered))
    return Latency(
        rate,
        len(accepted) / (done - clock),
        list(answered.values()),
        [delivered[n].timestamp() - due[n] for n in answered],
        dict(failed),
    )


async def delivered_at(engine: AsyncEngine, notice_ids: Sequence[str]) -> dict[str, datetime]:
    """When the last inbox row of each notice was written (ingest's clock, this machine's)."""
    found: dict[str, datetime] = {}
    async with engine.connect() as connection:
        for i in range(0, len(notice_ids), 1000):
            chunk = notice_ids[i : i + 1000]
            query = (
                select(Delivery.notice_id, func.max(Delivery.delivered_at))
                .where(Delivery.notice_id.in_(chunk))
                .group_by(Delivery.notice_id)
            )
            found.update({n: at for n, at in (await connection.execute(query)).all()})
    return found


async def flash_to_waiting_reader(stack: Stack, keyring: Keyring, reader: str, times: int) -> list[float]:
    """Seconds from posting a flash notice to a reader's waiting long-poll (`GET /v1/inbox?wait=`)
    returning it."""
    headers = {"Authorization": f"Bearer {stack.token(reader)}"}
    latencies = []
    async with httpx.AsyncClient(base_url=stack.gateway_url, headers=headers, timeout=60) as inbox:
        client = Senders(stack, 1)
        try:
            cursor: str | None = None
            for _ in range(times):
                sealed = keyring.seal(SENDERS[0], [reader], priority="flash")
                params: dict[str, str | int] = {"wait": 30, **({"after": cursor} if cursor else {})}
                waiting = asyncio.create_task(inbox.get("/v1/inbox", params=params))
                await asyncio.sleep(0.3)  # the long-poll is parked before the notice is sent
                began = time.perf_counter()
                await client.post(sealed)
                page = (await waiting).json()
                latencies.append(time.perf_counter() - began)
                if [item["notice_id"] for item in page["items"]] != [sealed.notice_id]:
                    raise RuntimeError(f"the long-poll returned {page['items']!r}, not the flash notice")
                cursor = page["next_cursor"]
        finally:
            await client.close()
    return latencies


FILLER_NOTICES = text(
    """
    INSERT INTO notices (notice_id, sender, case_ref, notice_type, priority, tlp, sent_at, envelope,
                         envelope_sha256, kafka_topic, kafka_partition, kafka_offset, ingested_at)
    SELECT md5(CAST(:salt AS text) || g::text)::uuid::text, 'kr-desk', 'KD-2025-0001', 'intel_report',
           'routine', 'amber', now(), :envelope, repeat('0', 64), 'bench.filler', 0, g, now()
    FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS g
    """
)
FILLER_DELIVERIES = text(
    """
    INSERT INTO deliveries (notice_id, recipient, state, delivered_at)
    SELECT md5(CAST(:salt AS text) || g::text)::uuid::text,
           CASE WHEN g % 100 = 0 THEN CAST(:reader AS text) ELSE 'bench-01' END,
           CASE WHEN g % 100 = 0 THEN 'delivered' ELSE 'acknowledged' END,
           now()
    FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS g
    """
)


async def fill(engine: AsyncEngine, reader: str, envelope_bytes: int, first: int, last: int) -> None:
    """Stores notices first..last straight into the database, one inbox row each: every hundredth for
    `reader`, the rest acknowledged by another agency. Their envelope is a placeholder of real size."""
    if last < first:
        return
    chunk, salt = 50_000, uuid.uuid4().hex
    for low in range(first, last + 1, chunk):
        high = min(last, low + chunk - 1)
        values = {"salt": salt, "first": low, "last": high}
        async with engine.begin() as connection:
            await connection.execute(FILLER_NOTICES, {**values, "envelope": b"x" * envelope_bytes})
            await connection.execute(FILLER_DELIVERIES, {**values, "reader": reader})
    # What autovacuum would have done by then on a live database; left to it, it would run during the
    # timed pulls and the figure would be of the vacuum, not the pull.
    async with engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.execute(text("VACUUM (ANALYZE) notices, deliveries"))


async def stored_notices(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(text("SELECT count(*) FROM notices"))).scalar_one())


@dataclass(frozen=True)
class Pulls:
    ms: Figure  # wall milliseconds a pull
    cpu_ms: dict[str, float]  # CPU milliseconds a pull of each of the meter's clocks


async def inbox_pull_scaling(
    stack: Stack,
    engine: AsyncEngine,
    reader: str,
    sizes: Sequence[int],
    pulls: int,
    envelope_bytes: int,
    clocks: dict[str, Callable[[], float]],
) -> dict[int, Pulls]:
    """Milliseconds for `GET /v1/inbox` of the newest 10 notices in `reader`'s inbox as the number of
    notices stored grows to each of `sizes`, and the CPU each of `clocks` spent a pull meanwhile: unlike
    the wall time, robust to whatever else the machine runs then."""
    figures: dict[int, Pulls] = {}
    headers = {"Authorization": f"Bearer {stack.token(reader)}"}
    async with httpx.AsyncClient(base_url=stack.gateway_url, headers=headers, timeout=120) as inbox:
        for size in sizes:
            stored = await stored_notices(engine)
            if stored > size:
                raise RuntimeError(f"{stored} notices are stored already, more than {size}")
            await fill(engine, reader, envelope_bytes, 1, size - stored)
            async with engine.connect() as connection:
                seqs = (
                    (
                        await connection.execute(
                            select(Delivery.seq)
                            .where(Delivery.recipient == reader)
                            .order_by(Delivery.seq.desc())
                            .limit(11)
                        )
                    )
                    .scalars()
                    .all()
                )
            params: dict[str, str | int] = {"limit": 10}
            if len(seqs) == 11:
                params["after"] = encode_cursor(seqs[-1])
            await inbox.get("/v1/inbox", params=params)  # marks the page fetched; the timed pulls only read
            samples = []
            meter = CpuMeter(clocks)
            meter.start()
            for _ in range(pulls):
                began = time.perf_counter()
                response = await inbox.get("/v1/inbox", params=params)
                samples.append((time.perf_counter() - began) * 1000)
                if response.status_code != 200 or len(response.json()["items"]) != min(10, len(seqs)):
                    raise RuntimeError(f"inbox pull answered {response.status_code}: {response.text[:300]}")
            meter.stop(pulls)
            figures[size] = Pulls(Figure.of_durations(samples), meter.windows[0])
    return figures
