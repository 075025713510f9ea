"""Routing and delivery: an envelope becomes one inbox row per recipient, exactly once; the agency pulls
its inbox (cursor, filters), which marks copies fetched, and acknowledges each with a signed receipt."""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Executable, FromClause, Select, String, bindparam, insert, or_, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.api import (
    BIGINT_MAX,
    Acknowledgement,
    DeliveryState,
    InboxItem,
    RecipientStatus,
)
from schemas.events import Event, EventType
from services.delivery.deadlines import DEFAULT_SLA, Sla
from services.delivery.errors import DeliveryError
from services.delivery.events import delivery_event, fetched_events, notice_event
from services.delivery.models import Delivery, NoticeRow
from services.envelope.errors import EnvelopeError
from services.envelope.receipts import check_receipt
from services.envelope.service import Freshness, ParsedEnvelope
from services.evidence.export import Acknowledgements
from services.platform.database import utcnow
from services.platform.kafka import EventPublisher
from services.trust.keyring import DirectoryView

SOURCE = "deskbridge/gateway"


@dataclass(frozen=True)
class RecordRef:
    """Where ingest found an envelope, and the traceparent of its span that stores it."""

    topic: str
    partition: int
    offset: int
    traceparent: str | None = None


def _notice_row(envelope: ParsedEnvelope, ref: RecordRef, now: datetime) -> dict[str, Any]:
    """The notices row, as the parameters of a Core insert (no ORM object: it is only inserted)."""
    routing = envelope.routing
    return {
        "notice_id": str(routing.notice_id),
        "sender": routing.sender,
        "case_ref": routing.case_ref,
        "notice_type": routing.notice_type.value,
        "priority": routing.priority.value,
        "tlp": routing.tlp.value,
        "sent_at": routing.sent_at,
        "expires_at": routing.expires_at,
        "in_reply_to": str(routing.in_reply_to) if routing.in_reply_to else None,
        "forwarded_from": str(routing.forwarded_from) if routing.forwarded_from else None,
        "envelope": envelope.raw,
        "envelope_sha256": envelope.sha256,
        "kafka_topic": ref.topic,
        "kafka_partition": ref.partition,
        "kafka_offset": ref.offset,
        "ingested_at": now,
        "traceparent": ref.traceparent,
    }


def _inbox_rows(envelope: ParsedEnvelope, now: datetime, sla: Sla) -> list[dict[str, Any]]:
    routing = envelope.routing
    notice_id, due = str(routing.notice_id), sla.due(routing.priority.value, now)
    return [
        {"notice_id": notice_id, "recipient": r, "state": "delivered", "delivered_at": now, "ack_due_at": due}
        for r in routing.recipients
    ]


@dataclass(frozen=True)
class Materialised:
    """What routing one envelope did: the delivery events to publish, and whether its rows were written
    now (False for a redelivered record, whose rows an earlier delivery wrote)."""

    events: list[Event]
    written: bool


def _delivered(envelope: ParsedEnvelope, written: bool, now: datetime) -> Materialised:
    """The same events whether the rows are written now or were before: the envelope is the same bytes,
    so its notice id, case and hash are the stored ones."""
    routing = envelope.routing
    events = [
        notice_event(
            EventType.notice_delivered,
            routing.notice_id,
            routing.case_ref,
            envelope.sha256,
            r,
            "ingest",
            now,
        )
        for r in routing.recipients
    ]
    return Materialised(events, written)


def _replay(notice_id: str) -> EnvelopeError:
    return EnvelopeError("duplicate_notice", f"notice id {notice_id} was already used")


async def materialise(
    session: AsyncSession, envelope: ParsedEnvelope, ref: RecordRef, sla: Sla = DEFAULT_SLA
) -> Materialised:
    """Writes the notice and its inbox rows (caller commits), with the delivery events to publish.

    A redelivered record (same envelope bytes) writes nothing and returns the same events again;
    another envelope reusing a notice id is a replay and is refused.
    """
    routing = envelope.routing
    notice_id = str(routing.notice_id)
    now = utcnow()
    stored = await _stored_hashes(session, [notice_id])  # and holds the inbox lock
    if notice_id in stored:
        if stored[notice_id] != envelope.sha256:
            raise _replay(notice_id)
        return _delivered(envelope, written=False, now=now)
    await _insert(session, [_notice_row(envelope, ref, now)], _inbox_rows(envelope, now, sla))
    delivered = _delivered(envelope, written=True, now=now)
    replied = await _mark_replied(session, routing.in_reply_to, routing.sender, now)
    return Materialised(delivered.events + replied, written=True)


async def materialise_many(
    session: AsyncSession, admitted: Sequence[tuple[ParsedEnvelope, RecordRef]], sla: Sla = DEFAULT_SLA
) -> list[Materialised | EnvelopeError]:
    """materialise() for a run of notices that are neither replies nor forwards, in one read and one
    insert per table instead of several round trips each; for each item, its events or why it is refused.

    The same rules hold: a redelivered envelope (here or earlier in the run) writes nothing and announces
    the same events again; another envelope reusing a notice id is a replay. The caller keeps the items
    in their Kafka order, which is the order their inbox places are handed out in.
    """
    if any(e.routing.in_reply_to or e.routing.forwarded_from for e, _ in admitted):
        raise ValueError("replies and forwards go through materialise(), one at a time")
    known = await _stored_hashes(session, [str(e.routing.notice_id) for e, _ in admitted])
    now = utcnow()
    outcomes: list[Materialised | EnvelopeError] = []
    notices: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    for envelope, ref in admitted:
        notice_id = str(envelope.routing.notice_id)
        earlier = known.get(notice_id)
        if earlier is not None:
            same = earlier == envelope.sha256
            outcomes.append(_delivered(envelope, written=False, now=now) if same else _replay(notice_id))
            continue
        known[notice_id] = envelope.sha256
        notices.append(_notice_row(envelope, ref, now))
        rows += _inbox_rows(envelope, now, sla)
        outcomes.append(_delivered(envelope, written=True, now=now))
    if notices:
        await _insert(session, notices, rows)
    return outcomes


INBOX_WRITE_LOCK = 0x6465736B  # any fixed number, the same in every ingest process

# Inbox places (`seq`) must become visible in the order they are handed out, or a reader's cursor could
# pass a place that commits later. With several ingest processes on PostgreSQL, a transaction lock
# serialises the inbox writes until commit (SQLite has one writer anyway); verifying envelopes still runs
# in parallel. The read of what is stored takes it, in the same round trip: the read sees the database as
# of before the lock, as a read of its own before the lock would, and a notice another process stored
# in between makes the insert fail (the caller then goes one at a time). The ids go as one array.
_STORED_HASHES: dict[str, Executable] = {
    "postgresql": text(
        "SELECT notices.notice_id, notices.envelope_sha256 FROM pg_advisory_xact_lock(:key) AS held"
        " LEFT JOIN notices ON notices.notice_id = ANY(:ids)"
    ).bindparams(bindparam("ids", type_=ARRAY(String)), key=INBOX_WRITE_LOCK),
    "sqlite": select(NoticeRow.notice_id, NoticeRow.envelope_sha256).where(
        NoticeRow.notice_id.in_(bindparam("ids", expanding=True))
    ),
}


async def _stored_hashes(session: AsyncSession, notice_ids: list[str]) -> dict[str, str]:
    """The envelope hash of each of these notices that is stored already; takes the inbox lock."""
    query = _STORED_HASHES[session.get_bind().dialect.name]
    rows = (await session.execute(query, {"ids": notice_ids})).all()
    return {notice_id: sha for notice_id, sha in rows if notice_id is not None}


# What ingest writes of a notice and of each of its inbox rows (the other columns start empty, or numbered).
_NOTICE_COLUMNS = (
    "notice_id",
    "sender",
    "case_ref",
    "notice_type",
    "priority",
    "tlp",
    "sent_at",
    "expires_at",
    "in_reply_to",
    "forwarded_from",
    "envelope",
    "envelope_sha256",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
    "ingested_at",
    "traceparent",
)
_INBOX_COLUMNS = ("notice_id", "recipient", "state", "delivered_at", "ack_due_at")


_POSTGRESQL = PGDialect()  # type: ignore[no-untyped-call]  # SQLAlchemy leaves it untyped


def _unnest(table: FromClause, columns: Sequence[str], prefix: str) -> str:
    """unnest() of one array parameter per column, of the column's type (strings unbounded: a cast to
    varchar(n) would cut a longer one short, where the insert refuses it)."""
    types = {c: table.c[c].type for c in columns}
    names = {
        c: "varchar" if isinstance(t, String) else t.compile(dialect=_POSTGRESQL) for c, t in types.items()
    }
    return f"unnest({', '.join(f'CAST(:{prefix}{c} AS {names[c]}[])' for c in columns)})"


# PostgreSQL: both tables in one statement (one round trip), each from one array per column. The inbox
# rows are numbered in their arrays' order; their foreign key is checked at the end of the statement,
# with the notices in.
_INBOX = ", ".join(_INBOX_COLUMNS)
_INSERT_BOTH = text(
    f"WITH stored AS (INSERT INTO notices ({', '.join(_NOTICE_COLUMNS)})"  # noqa: S608 (our names, no input)
    f" SELECT * FROM {_unnest(NoticeRow.__table__, _NOTICE_COLUMNS, 'n_')})"
    f" INSERT INTO deliveries ({_INBOX}) SELECT {_INBOX}"
    f" FROM {_unnest(Delivery.__table__, _INBOX_COLUMNS, 'd_')} WITH ORDINALITY AS d({_INBOX}, place)"
    " ORDER BY place"
)
# SQLite: one executemany per table, in Core.
_INSERT_NOTICES, _INSERT_DELIVERIES = insert(NoticeRow), insert(Delivery)


async def _insert(session: AsyncSession, notices: list[dict[str, Any]], rows: list[dict[str, Any]]) -> None:
    """The notice rows and their inbox rows (which refer to them), in the given order: that is the order
    the inbox places (`seq`) are handed out in."""
    connection = await session.connection()
    if connection.dialect.name == "postgresql":
        columns = {f"n_{c}": [n[c] for n in notices] for c in _NOTICE_COLUMNS}
        columns.update({f"d_{c}": [r[c] for r in rows] for c in _INBOX_COLUMNS})
        await connection.execute(_INSERT_BOTH, columns)
    else:
        await connection.execute(_INSERT_NOTICES, notices)
        await connection.execute(_INSERT_DELIVERIES, rows)


async def _mark_replied(
    session: AsyncSession, original_id: uuid.UUID | None, replier: str, now: datetime
) -> list[Event]:
    """A reply moves the replier's copy of the original to `replied` (admission checked it was shared)."""
    if original_id is None:
        return []
    original = await session.get(NoticeRow, str(original_id))
    if original is None:
        return []
    await session.execute(
        update(Delivery)
        .where(Delivery.notice_id == original.notice_id, Delivery.recipient == replier)
        .where(Delivery.replied_at.is_(None))
        .values(replied_at=now)
    )
    copy = select(Delivery.seq).where(Delivery.notice_id == original.notice_id, Delivery.recipient == replier)
    if (await session.execute(copy)).first() is None:
        return []  # the original's sender answering its own recipients has no copy to mark
    return [delivery_event(EventType.notice_replied, original, replier, replier)]


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"v1:{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The inbox place a cursor names; DeliveryError(bad_cursor) for anything this server never issued,
    a place below 0 or beyond what the database can hold among them."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        version, seq = text.split(":", 1)
        place = int(seq)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DeliveryError("bad_cursor", "not a cursor this server issued") from exc
    if version != "v1" or not 0 <= place <= BIGINT_MAX:
        raise DeliveryError("bad_cursor", "not a cursor this server issued")
    return place


Q = TypeVar("Q", bound=Select[*tuple[Any, ...]])


@dataclass(frozen=True)
class InboxFilter:
    """A subscription's narrowing; an empty tuple admits everything."""

    types: tuple[str, ...] = ()
    priorities: tuple[str, ...] = ()
    case_refs: tuple[str, ...] = ()

    def narrow(self, query: Q) -> Q:
        """The query (joined with NoticeRow) limited to what this filter admits."""
        for column, values in (
            (NoticeRow.notice_type, self.types),
            (NoticeRow.priority, self.priorities),
            (NoticeRow.case_ref, self.case_refs),
        ):
            if values:
                query = query.where(column.in_(values))
        return query


async def inbox(
    session: AsyncSession, agency: str, after: int, limit: int, only: InboxFilter = InboxFilter()
) -> list[tuple[Delivery, NoticeRow]]:
    """The agency's copies after `after` in delivery order, leaving out expired notices and recalled
    ones never fetched. Served from the (recipient, seq) index: flat in the number stored."""
    now = utcnow()
    query = (
        select(Delivery, NoticeRow)
        .join(NoticeRow, NoticeRow.notice_id == Delivery.notice_id)
        .where(Delivery.recipient == agency, Delivery.seq > after)
        .where(or_(NoticeRow.expires_at.is_(None), NoticeRow.expires_at > now))
        .where(or_(Delivery.recalled_at.is_(None), Delivery.fetched_at.is_not(None)))
        .where(NoticeRow.erased_at.is_(None))
        .order_by(Delivery.seq)
        .limit(limit)
    )
    return [(d, n) for d, n in (await session.execute(only.narrow(query))).all()]


def shown_state(delivery: Delivery) -> DeliveryState:
    """Recall and expiry overlay the progress state."""
    if delivery.recalled_at is not None:
        return DeliveryState.recalled
    if delivery.expired_at is not None:
        return DeliveryState.expired
    if delivery.replied_at is not None:
        return DeliveryState.replied
    return DeliveryState(delivery.state)


def recipient_status(delivery: Delivery) -> RecipientStatus:
    return RecipientStatus(
        agency=delivery.recipient,
        state=shown_state(delivery),
        delivered_at=delivery.delivered_at,
        fetched_at=delivery.fetched_at,
        acknowledged_at=delivery.acknowledged_at,
        recalled_at=delivery.recalled_at,
        expired_at=delivery.expired_at,
        replied_at=delivery.replied_at,
        ack_due_at=delivery.ack_due_at,
        escalated_at=delivery.escalated_at,
        receipt=delivery.receipt,
    )


async def mark_fetched(session: AsyncSession, rows: Sequence[tuple[Delivery, NoticeRow]]) -> None:
    now = utcnow()
    seqs = [d.seq for d, _ in rows if d.state == "delivered"]
    if seqs:
        await session.execute(
            update(Delivery)
            .where(Delivery.seq.in_(seqs), Delivery.state == "delivered")
            .values(state="fetched", fetched_at=now)
        )
    for delivery, _ in rows:
        if delivery.seq in seqs:
            delivery.state, delivery.fetched_at = "fetched", now


def inbox_item(delivery: Delivery, notice: NoticeRow) -> InboxItem:
    return InboxItem(
        notice_id=uuid.UUID(notice.notice_id),
        sender=notice.sender,
        case_ref=notice.case_ref,
        notice_type=notice.notice_type,
        priority=notice.priority,
        tlp=notice.tlp,
        state=shown_state(delivery),
        delivered_at=delivery.delivered_at,
        expires_at=notice.expires_at,
        in_reply_to=uuid.UUID(notice.in_reply_to) if notice.in_reply_to else None,
        cursor=encode_cursor(delivery.seq),
        envelope=notice.envelope.decode(),
    )


async def own_delivery(
    session: AsyncSession, agency: str, notice_id: str
) -> tuple[Delivery, NoticeRow] | None:
    """The agency's own copy; another agency's notice is indistinguishable from a missing one."""
    query = (
        select(Delivery, NoticeRow)
        .join(NoticeRow, NoticeRow.notice_id == Delivery.notice_id)
        .where(Delivery.notice_id == notice_id, Delivery.recipient == agency)
    )
    row = (await session.execute(query)).first()
    return (row[0], row[1]) if row is not None else None


async def acknowledge(session: AsyncSession, delivery: Delivery, receipt: str) -> Acknowledgement:
    """Records the acknowledgement with the recipient's checked receipt; a second ack keeps the first."""
    if delivery.state != "acknowledged":
        now = utcnow()
        await session.execute(
            update(Delivery)
            .where(Delivery.seq == delivery.seq, Delivery.state != "acknowledged")
            .values(
                state="acknowledged",
                acknowledged_at=now,
                fetched_at=delivery.fetched_at or now,
                receipt=receipt,
            )
        )
        delivery.state, delivery.acknowledged_at, delivery.receipt = "acknowledged", now, receipt
    assert delivery.acknowledged_at is not None and delivery.receipt is not None
    return Acknowledgement(
        notice_id=uuid.UUID(delivery.notice_id),
        agency=delivery.recipient,
        state=DeliveryState.acknowledged,
        acknowledged_at=delivery.acknowledged_at,
        receipt=delivery.receipt,
    )


async def acknowledgements(session: AsyncSession, notice_id: str) -> Acknowledgements | None:
    """The notice's envelope hash and the receipts its recipients acknowledged it with, for the audit
    service's evidence bundles (it reads this database too); None for a notice never delivered."""
    notice = await session.get(NoticeRow, notice_id)
    if notice is None:
        return None
    query = select(Delivery.recipient, Delivery.receipt).where(
        Delivery.notice_id == notice_id, Delivery.receipt.is_not(None)
    )
    receipts = {agency: receipt for agency, receipt in (await session.execute(query)).all() if receipt}
    return Acknowledgements(notice.envelope_sha256, receipts)


def within(rows: list[tuple[Delivery, NoticeRow]], max_bytes: int) -> list[tuple[Delivery, NoticeRow]]:
    """The first rows whose envelopes fit `max_bytes` together, and always the first: a page of 500
    envelopes at their 2 MiB limit would be a gigabyte in one answer."""
    kept: list[tuple[Delivery, NoticeRow]] = []
    total = 0
    for delivery, notice in rows:
        total += len(notice.envelope)
        if kept and total > max_bytes:
            break
        kept.append((delivery, notice))
    return kept


async def take(
    session: AsyncSession,
    publisher: EventPublisher,
    agency: str,
    after: int,
    limit: int,
    only: InboxFilter,
    max_bytes: int,
) -> list[InboxItem]:
    """One page of the agency's inbox, at most `limit` notices and about `max_bytes` of envelopes, marked
    fetched (caller commits); the audit trail learns of each first fetch before the state changes."""
    rows = within(await inbox(session, agency, after, limit, only), max_bytes)
    await publisher.publish_many(fetched_events(rows, agency), SOURCE)
    await mark_fetched(session, rows)
    return [inbox_item(d, n) for d, n in rows]


async def acknowledge_notice(
    session: AsyncSession,
    publisher: EventPublisher,
    directory: DirectoryView,
    agency: str,
    notice_id: str,
    receipt: str,
    freshness: Freshness,
) -> Acknowledgement:
    """The agency acknowledges its copy with a receipt signed by its own key (caller commits). A copy
    recalled or expired is gone; a second acknowledgement keeps the first receipt."""
    found = await own_delivery(session, agency, notice_id)
    if found is None:
        raise DeliveryError("not_in_inbox", f"no notice {notice_id} in the inbox of {agency}")
    delivery, notice = found
    if delivery.recalled_at is not None:
        raise DeliveryError("recalled", f"notice {notice_id} was recalled by its sender")
    now = utcnow()
    if notice.expires_at is not None and notice.expires_at <= now:
        raise DeliveryError(
            "notice_expired", f"notice {notice_id} expired at {notice.expires_at.isoformat()}"
        )
    if delivery.state == "acknowledged":
        return await acknowledge(session, delivery, receipt)  # the first receipt stands
    check_receipt(
        receipt, directory.verification_key, agency, notice_id, notice.envelope_sha256, now, freshness
    )
    event = delivery_event(EventType.notice_acknowledged, notice, agency, agency)
    receipt_hash = hashlib.sha256(receipt.encode()).hexdigest()
    await publisher.publish(event.model_copy(update={"details": {"receipt_sha256": receipt_hash}}), SOURCE)
    return await acknowledge(session, delivery, receipt)
