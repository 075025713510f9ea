"""What must hold after the faults, read from the database, from Kafka and through the auditor's own
verification: every notice acknowledged with a 2xx in every recipient's inbox once, every fact in the
audit log once and the log intact, every poison record dead-lettered with its reason, and nothing but
a 503 with Retry-After from either API while the database was gone."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.stack import Stack
from faults.chaos import Chaos, Poison
from faults.traffic import Traffic
from schemas.events import EventType
from services.delivery.models import Delivery
from services.platform.database import ROOT, make_sessionmaker
from services.platform.kafka import KafkaAccess, Topics, header_value
from services.transparency.entries import verify_chain
from services.transparency.models import AuditEntry, TlogCheckpoint
from services.transparency.service import to_record

SHOWN = 5  # ids named in a finding; the counts say how many there are


@dataclass(frozen=True)
class DeadLetter:
    origin: str  # topic:partition:offset of the record that was dead-lettered
    reason: str
    detail: str


@dataclass
class Verdict:
    acked: int = 0
    refused: Counter[str] = field(default_factory=Counter)  # notices given up, by their last answer
    inbox_rows: int = 0
    lost: list[str] = field(default_factory=list)  # acknowledged, missing from an addressed inbox
    duplicated: list[str] = field(default_factory=list)  # (notice, recipient) with more than one row
    delivered_without_2xx: list[str] = field(default_factory=list)
    settled_after_s: float = 0.0  # from the end of the load until every inbox row was there
    audit_entries: int = 0
    audit_missing: list[str] = field(default_factory=list)
    audit_duplicated: list[str] = field(default_factory=list)
    chain_breaks: list[str] = field(default_factory=list)
    audit_verify: str = ""  # the auditor's `deskbridge audit verify`, its last line
    audit_verified: bool = False
    dead_letters: list[DeadLetter] = field(default_factory=list)
    poison_findings: list[str] = field(default_factory=list)
    outage_answers: Counter[str] = field(default_factory=Counter)  # "path status" during the outages
    outage_violations: list[str] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)
    takeover_findings: list[str] = field(default_factory=list)  # the standby audit did not take over

    @property
    def passed(self) -> bool:
        return not (
            self.lost
            or self.duplicated
            or self.audit_missing
            or self.audit_duplicated
            or self.chain_breaks
            or not self.audit_verified
            or self.poison_findings
            or self.outage_violations
            or self.crashes
            or self.takeover_findings
        )

    def failures(self) -> list[str]:
        def named(what: str, items: Sequence[str]) -> list[str]:
            return [f"{len(items)} {what}: {', '.join(items[:SHOWN])}"] if items else []

        return [
            *named("acknowledged notices lost", self.lost),
            *named("inbox rows duplicated", self.duplicated),
            *named("facts missing from the audit log", self.audit_missing),
            *named("facts in the audit log twice", self.audit_duplicated),
            *named("breaks in the audit hash chain", self.chain_breaks),
            *([] if self.audit_verified else [f"audit verify failed: {self.audit_verify}"]),
            *self.poison_findings,
            *named("answers other than 503 + Retry-After in a database outage", self.outage_violations),
            *named("service crashes (exits nobody caused)", self.crashes),
            *self.takeover_findings,
        ]


async def _inbox(engine: AsyncEngine) -> dict[str, list[str]]:
    """Every inbox row: notice id -> recipients, one entry per row."""
    rows: dict[str, list[str]] = defaultdict(list)
    async with engine.connect() as connection:
        result = await connection.execute(select(Delivery.notice_id, Delivery.recipient))
        for notice_id, recipient in result:
            rows[notice_id].append(recipient)
    return rows


def _missing(traffic: Traffic, inbox: dict[str, list[str]]) -> list[str]:
    return [
        f"{notice_id}->{recipient}"
        for notice_id in traffic.acked
        for recipient in traffic.addressed[notice_id]
        if recipient not in inbox.get(notice_id, [])
    ]


async def settle_inboxes(engine: AsyncEngine, traffic: Traffic, verdict: Verdict, patience: float) -> None:
    """Waits until every acknowledged notice is in each of its inboxes, or until nothing has arrived for
    `patience` seconds; then judges what is there."""
    began = time.monotonic()
    last_change, last_count = began, -1
    while True:
        inbox = await _inbox(engine)
        missing = _missing(traffic, inbox)
        count = sum(len(r) for r in inbox.values())
        if count != last_count:
            last_change, last_count = time.monotonic(), count
        if not missing or time.monotonic() - last_change > patience:
            break
        await asyncio.sleep(1)
    verdict.settled_after_s = time.monotonic() - began
    verdict.acked = len(traffic.acked)
    verdict.refused = Counter(answer.split(" ", 1)[0] for answer in traffic.refused.values())
    verdict.inbox_rows = count
    verdict.lost = missing
    verdict.duplicated = [
        f"{notice_id}->{recipient} x{times}"
        for notice_id, recipients in inbox.items()
        for recipient, times in Counter(recipients).items()
        if times > 1
    ]
    verdict.delivered_without_2xx = sorted(
        n for n in inbox if n in traffic.addressed and n not in traffic.acked
    )


async def _audit_facts(engine: AsyncEngine) -> list[tuple[str, str | None, str | None, dict[str, object]]]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(AuditEntry.event_type, AuditEntry.notice_id, AuditEntry.agency, AuditEntry.details).where(
                AuditEntry.event_type.in_(
                    (
                        EventType.notice_submitted.value,
                        EventType.notice_delivered.value,
                        EventType.notice_rejected.value,
                    )
                )
            )
        )
        return [(kind, notice, agency, json.loads(details)) for kind, notice, agency, details in rows]


def _judge_audit(
    facts: list[tuple[str, str | None, str | None, dict[str, object]]],
    traffic: Traffic,
    poison: Sequence[Poison],
    topic: str,
) -> tuple[list[str], list[str]]:
    """(facts missing, facts recorded twice): for each acknowledged notice a valid submission and one
    delivery per recipient; for each poison record its rejection with the expected reason."""
    submitted: set[str] = set()
    delivered: Counter[tuple[str, str]] = Counter()
    rejected: dict[str, object] = {}
    for kind, notice_id, agency, details in facts:
        if kind == EventType.notice_submitted.value and details.get("outer_signature") == "valid":
            submitted.add(str(notice_id))
        elif kind == EventType.notice_delivered.value:
            delivered[(str(notice_id), str(agency))] += 1
        elif kind == EventType.notice_rejected.value and "record" in details:
            rejected[str(details["record"])] = details.get("reason")
    missing = []
    for notice_id in traffic.acked:
        if notice_id not in submitted:
            missing.append(f"notice.submitted {notice_id}")
        missing += [
            f"notice.delivered {notice_id}->{recipient}"
            for recipient in traffic.addressed[notice_id]
            if (notice_id, recipient) not in delivered
        ]
    for record in poison:
        origin = f"{topic}:{record.partition}:{record.offset}"
        if rejected.get(origin) != record.expected_reason:
            missing.append(f"notice.rejected {origin} ({record.kind}): found {rejected.get(origin)!r}")
    twice = [f"notice.delivered {n}->{r} x{times}" for (n, r), times in delivered.items() if times > 1]
    return missing, twice


async def settle_audit(
    engine: AsyncEngine,
    traffic: Traffic,
    poison: Sequence[Poison],
    topic: str,
    verdict: Verdict,
    patience: float,
) -> None:
    """Waits until the audit log holds every expected fact (or `patience` s pass without a new entry),
    then until a signed checkpoint covers the whole log."""
    last_change, last_count = time.monotonic(), -1
    while True:
        facts = await _audit_facts(engine)
        missing, twice = _judge_audit(facts, traffic, poison, topic)
        if len(facts) != last_count:
            last_change, last_count = time.monotonic(), len(facts)
        if not missing or time.monotonic() - last_change > patience:
            break
        await asyncio.sleep(1)
    verdict.audit_missing, verdict.audit_duplicated = missing, twice
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        async with engine.connect() as connection:
            entries = (await connection.execute(select(func.count()).select_from(AuditEntry))).scalar_one()
            signed = (await connection.execute(select(func.max(TlogCheckpoint.size)))).scalar_one()
        if signed == entries:
            break
        await asyncio.sleep(1)
    verdict.audit_entries = int(entries)


async def check_chain(engine: AsyncEngine, verdict: Verdict) -> None:
    """The hash chain, entry by entry, as stored."""
    async with make_sessionmaker(engine)() as session:
        rows = (await session.execute(select(AuditEntry).order_by(AuditEntry.seq))).scalars().all()
    records = [to_record(row) for row in rows]
    verdict.chain_breaks = [f"{b.seq}: {b.reason}" for b in verify_chain(records)]


def verify_as_auditor(stack: Stack, verdict: Verdict) -> None:
    """`deskbridge audit verify`, as an auditor runs it: the pinned log key, every leaf, node and checkpoint,
    trusting nothing the server computed."""
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli.main",
            "audit",
            "verify",
            "--home",
            str(stack.home),
            "--audit-server",
            stack.audit_url,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    lines = (run.stdout + run.stderr).strip().splitlines()
    verdict.audit_verify = lines[-1] if lines else f"no output, exit {run.returncode}"
    verdict.audit_verified = run.returncode == 0 and verdict.audit_verify.startswith("audit log intact")


async def _partitions(access: KafkaAccess, topic: str) -> list[int]:
    admin = AIOKafkaAdminClient(**access.client_args())
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
        return [p["partition"] for p in described["partitions"]]
    finally:
        await admin.close()


async def read_dead_letters(access: KafkaAccess, topics: Topics) -> list[DeadLetter]:
    """Every record in the dead-letter topic, read from the start without a consumer group."""
    consumer = AIOKafkaConsumer(
        **access.client_args(), enable_auto_commit=False, max_partition_fetch_bytes=8 * 1024 * 1024
    )
    await consumer.start()
    try:
        partitions = await _partitions(access, topics.dead_letters)
        assigned = [TopicPartition(topics.dead_letters, p) for p in partitions]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        ends = await consumer.end_offsets(assigned)
        found: list[DeadLetter] = []
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                for record in records:
                    headers = list(record.headers)
                    origin = ":".join(
                        header_value(headers, h) or "?" for h in ("dlq_topic", "dlq_partition", "dlq_offset")
                    )
                    found.append(
                        DeadLetter(
                            origin,
                            header_value(headers, "dlq_reason") or "?",
                            header_value(headers, "dlq_detail") or "",
                        )
                    )
        return found
    finally:
        await consumer.stop()


def judge_poison(dead: Sequence[DeadLetter], poison: Sequence[Poison], topic: str, verdict: Verdict) -> None:
    verdict.dead_letters = list(dead)
    by_origin = {d.origin: d for d in dead}
    for record in poison:
        origin = f"{topic}:{record.partition}:{record.offset}"
        letter = by_origin.get(origin)
        if letter is None:
            verdict.poison_findings.append(f"{record.kind} ({origin}) is not in the dead-letter topic")
        elif letter.reason != record.expected_reason:
            verdict.poison_findings.append(
                f"{record.kind} ({origin}) dead-lettered as {letter.reason}, not {record.expected_reason}"
            )
    twice = [origin for origin, times in Counter(d.origin for d in dead).items() if times > 1]
    if twice:
        verdict.poison_findings.append(f"{len(twice)} records dead-lettered more than once: {twice[:SHOWN]}")


API_PATHS = ("POST /v1/envelopes", "GET /v1/inbox", "GET /v1/notices/", "GET /v1/audit/")


def judge_outages(traffic: Traffic, chaos: Chaos, verdict: Verdict) -> None:
    """Every answer asked and given wholly inside a database outage must be a 503 with Retry-After and a
    problem body that names the cause, not a stack trace."""
    for down, up in chaos.outages:
        for answer in traffic.answers:
            if not (down <= answer.began and answer.ended <= up):
                continue
            path = next((p for p in API_PATHS if answer.path.startswith(p)), answer.path)
            verdict.outage_answers[f"{path} {answer.status}"] += 1
            if answer.status != "503" or answer.retry_after is None or "Traceback" in answer.detail:
                verdict.outage_violations.append(
                    f"{answer.path} at {answer.began:.1f} s: {answer.status} "
                    f"(Retry-After {answer.retry_after}) {answer.detail[:150]}"
                )


async def judge(
    stack: Stack,
    engine: AsyncEngine,
    traffic: Traffic,
    chaos: Chaos,
    patience: float,
) -> Verdict:
    topics = Topics(stack.settings.topic_prefix)
    verdict = Verdict(crashes=list(chaos.crashes), takeover_findings=list(chaos.takeover_findings))
    await settle_inboxes(engine, traffic, verdict, patience)
    await settle_audit(engine, traffic, chaos.poison, topics.notices, verdict, patience)
    await check_chain(engine, verdict)
    await asyncio.to_thread(verify_as_auditor, stack, verdict)
    dead = await read_dead_letters(KafkaAccess.of(stack.settings), topics)
    judge_poison(dead, chaos.poison, topics.notices, verdict)
    judge_outages(traffic, chaos, verdict)
    return verdict
