"""A notice's life as its sender sees it: submission (an envelope sealed here for the desk, or by a partner
on its own machine, is admitted, made durable in Kafka and recorded; a refusal is audited with its
reason), its per-recipient status, the sender's list of them, recall and erasure."""

from __future__ import annotations

import base64
import json
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Text, bindparam, func, insert, select, tuple_, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer

from schemas.api import DeliveryState, NoticeStatus, RecipientStatus, SentNotice, SentPage
from schemas.events import Event, EventType, fact_id
from schemas.notices import Notice, NoticeDraft, RecallRequest
from services.delivery.events import delivery_event
from services.delivery.models import Delivery, NoticeRow
from services.delivery.service import recipient_status
from services.envelope.errors import EnvelopeError
from services.envelope.keys import AgencyKeys
from services.envelope.service import Freshness, ParsedEnvelope, parse_envelope, seal_notice, sha256_hex
from services.notices.admission import admit
from services.notices.errors import NoticeError, RecallRefused
from services.notices.limits import InboxRoom
from services.notices.models import Submission
from services.platform.database import Autocommit, utcnow
from services.platform.kafka import EventPublisher, ce_type, cloud_headers
from services.trust.keyring import DirectoryView
from services.trust.service import encryption_keys

SOURCE = "deskbridge/gateway"


def rejection(actor: str, reason: str, detail: str, raw: bytes, envelope: ParsedEnvelope | None) -> Event:
    """The audit record of a refused submission: who tried, why, and the hash of what they sent."""
    routing = envelope.routing if envelope is not None else None
    digest = envelope.sha256 if envelope is not None else sha256_hex(raw)
    return Event(
        event_id=fact_id("rejected", actor, digest, reason),  # the id this fact has always had
        type=EventType.notice_rejected,
        occurred_at=utcnow(),
        actor=actor,
        agency=actor,
        notice_id=routing.notice_id if routing is not None else None,
        case_ref=routing.case_ref if routing is not None else None,
        envelope_sha256=digest,
        details={"reason": reason, "detail": detail[:500], "stage": "gateway"},
    )


async def _refuse(publisher: EventPublisher, event: Event) -> None:
    # The refusal is audited before it is answered; if Kafka is down the caller gets 503 instead.
    await publisher.publish(event, SOURCE)


@dataclass(frozen=True)
class Intake:
    """What admitting one submission needs, gathered per request. `database` runs single statements
    without a transaction (platform.database.Autocommit): a submission is a few of them, none needing
    another's atomicity, so no BEGIN or COMMIT is paid and nothing is held open while Kafka acknowledges."""

    database: Autocommit
    directory: DirectoryView
    publisher: EventPublisher
    freshness: Freshness
    room: InboxRoom


async def accept_envelope(intake: Intake, raw: bytes, caller: str) -> Submission:
    """Admits an envelope sent by `caller` and returns only after Kafka holds it with acks=all."""
    envelope: ParsedEnvelope | None = None
    try:
        envelope = parse_envelope(raw)
        if envelope.routing.sender != caller:
            raise EnvelopeError(
                "not_the_sender", f"the envelope is sent as {envelope.routing.sender}, you are {caller}"
            )
        again = await _same_again(intake.database, envelope)
        if again is not None:
            return again
        # Only a reply, a forward or an inbox count that is due reads more: the session connects then.
        async with intake.database.session() as session:
            await admit(session, intake.directory, envelope, utcnow(), intake.freshness)
            await intake.room.check(session, envelope.routing.recipients)
    except EnvelopeError as exc:
        await _refuse(intake.publisher, rejection(caller, exc.code, exc.detail, raw, envelope))
        raise
    submission = await _produce(intake, envelope)
    intake.room.accepted(envelope.routing.recipients)
    return submission


# Both tables in one statement, since this runs on every POST: the gateway's record and ingest's. On
# PostgreSQL the POSTs that arrive together ask in one statement (Autocommit.first_together).
EARLIER = select(
    select(Submission.envelope_sha256).where(Submission.notice_id == bindparam("id")).scalar_subquery(),
    select(NoticeRow.envelope_sha256).where(NoticeRow.notice_id == bindparam("id")).scalar_subquery(),
)
_ASKED = func.unnest(bindparam("id", type_=ARRAY(Text))).table_valued("id").render_derived(name="asked")
EARLIER_EACH = select(
    _ASKED.c.id,
    select(Submission.envelope_sha256).where(Submission.notice_id == _ASKED.c.id).scalar_subquery(),
    select(NoticeRow.envelope_sha256).where(NoticeRow.notice_id == _ASKED.c.id).scalar_subquery(),
)
COLUMNS = tuple(column.key for column in Submission.__table__.columns)
SUBMISSION = select(*Submission.__table__.columns).where(Submission.notice_id == bindparam("id"))
INGESTED_AT = select(NoticeRow.kafka_partition, NoticeRow.kafka_offset, NoticeRow.ingested_at).where(
    NoticeRow.notice_id == bindparam("id")
)
RECORD = insert(Submission).values({name: bindparam(name) for name in COLUMNS})


async def _same_again(database: Autocommit, envelope: ParsedEnvelope) -> Submission | None:
    """A client whose answer was lost may post the very same bytes again and get the same 202; any other
    envelope reusing a notice id is refused."""
    notice_id = str(envelope.routing.notice_id)
    earlier = await database.first_together(EARLIER, {"id": notice_id}, EARLIER_EACH)
    submitted_sha, stored_sha = earlier if earlier is not None else (None, None)
    if submitted_sha == envelope.sha256:
        return await _recorded(database, notice_id)
    if submitted_sha is None and stored_sha == envelope.sha256:
        return await _record_lost_submission(database, envelope)
    if submitted_sha is not None or stored_sha is not None:
        raise EnvelopeError("duplicate_notice", f"notice id {notice_id} was already used; choose a new id")
    return None


async def _recorded(database: Autocommit, notice_id: str) -> Submission:
    row = await database.first(SUBMISSION, {"id": notice_id})
    assert row is not None  # submissions are never deleted
    return Submission(**dict(zip(COLUMNS, row, strict=True)))


async def _record_lost_submission(database: Autocommit, envelope: ParsedEnvelope) -> Submission:
    """Kafka acknowledged an earlier post of these very bytes and ingest stored them, but the gateway
    died (or the database went away) before recording the submission, so that client never saw its 202.
    The record is written now from where ingest found the envelope, and the client gets its 202."""
    notice_id = str(envelope.routing.notice_id)
    stored = await database.first(INGESTED_AT, {"id": notice_id})
    assert stored is not None  # its sha was just read
    partition, offset, at = stored
    submission = _submission(envelope, partition, offset, at)
    try:
        await _insert(database, submission)
    except IntegrityError:
        return await _recorded(database, notice_id)  # a concurrent re-post recorded it first
    return submission


def _submission(envelope: ParsedEnvelope, partition: int, offset: int, at: datetime) -> Submission:
    """The gateway's record of an envelope Kafka holds at (partition, offset)."""
    routing = envelope.routing
    return Submission(
        notice_id=str(routing.notice_id),
        sender=routing.sender,
        case_ref=routing.case_ref,
        recipients=json.dumps(routing.recipients),
        envelope_sha256=envelope.sha256,
        kafka_partition=partition,
        kafka_offset=offset,
        submitted_at=at,
    )


async def _insert(database: Autocommit, submission: Submission) -> None:
    """One row, committed with those of the requests that arrive while the one before is written."""
    await database.run_together(RECORD, {name: getattr(submission, name) for name in COLUMNS})


async def _produce(intake: Intake, envelope: ParsedEnvelope) -> Submission:
    routing = envelope.routing
    notice_id = str(routing.notice_id)
    partition, offset = await intake.publisher.send(
        intake.publisher.topics.notices,
        routing.case_ref,
        envelope.raw,
        cloud_headers(ce_type(EventType.notice_submitted), notice_id, f"{SOURCE}/{routing.sender}"),
    )
    submission = _submission(envelope, partition, offset, utcnow())
    try:
        await _insert(intake.database, submission)
    except IntegrityError as exc:
        # A concurrent request with the same id won the race; ingest drops the second envelope as a replay.
        raise EnvelopeError(
            "duplicate_notice", f"notice id {notice_id} was already used; choose a new id"
        ) from exc
    return submission


async def seal_for_desk(intake: Intake, desk: AgencyKeys, draft: NoticeDraft) -> Submission:
    """The desk's path: the gateway holds the desk's keys, seals, then admits like any other envelope."""
    if desk.agency in draft.recipients:
        raise NoticeError("recipient_mismatch", "the desk cannot address a notice to itself")
    async with intake.database.session() as session:
        recipients = await encryption_keys(session, draft.recipients)
    notice = Notice(**draft.model_dump(), sender=desk.agency, sent_at=utcnow())
    envelope = seal_notice(notice, desk.signer(), recipients)
    return await accept_envelope(intake, envelope, desk.agency)


RECALL_TYPE = ce_type("notice.recall")


async def request_recall(
    session: AsyncSession, publisher: EventPublisher, notice_id: uuid.UUID, caller: str, reason: str | None
) -> None:
    """Puts the sender's recall on the notices topic, keyed by case like the notice itself, so ingest
    always meets the notice before its recall; ingest applies it (apply_recall)."""
    submission = await session.get(Submission, str(notice_id))
    if submission is None or submission.sender != caller:
        raise NoticeError("notice_not_found", f"no notice {notice_id} sent by {caller}")
    notice = await session.get(NoticeRow, str(notice_id))
    if notice is not None and notice.recalled_at is not None:
        raise NoticeError("already_recalled", f"notice {notice_id} was already recalled")
    request = RecallRequest(
        notice_id=notice_id,
        case_ref=submission.case_ref,
        sender=submission.sender,
        requested_by=caller,
        requested_at=utcnow(),
        reason=reason,
    )
    await publisher.send(
        publisher.topics.notices,
        submission.case_ref,
        request.model_dump_json().encode(),
        cloud_headers(RECALL_TYPE, f"recall:{notice_id}", f"{SOURCE}/{caller}"),
    )


async def apply_recall(session: AsyncSession, request: RecallRequest) -> list[Event]:
    """Marks the notice and every copy recalled (caller commits); idempotent on redelivery."""
    notice = await session.get(NoticeRow, str(request.notice_id))
    if notice is None:
        raise RecallRefused(f"notice {request.notice_id} was never delivered")
    if notice.sender != request.requested_by:
        raise RecallRefused(f"{request.requested_by} did not send notice {request.notice_id}")
    at = notice.recalled_at or request.requested_at
    notice.recalled_at = at
    await session.execute(
        update(Delivery)
        .where(Delivery.notice_id == notice.notice_id, Delivery.recalled_at.is_(None))
        .values(recalled_at=at)
    )
    deliveries = (
        await session.execute(select(Delivery).where(Delivery.notice_id == notice.notice_id))
    ).scalars()
    return [
        _with(delivery_event(EventType.notice_recalled, notice, d.recipient, request.requested_by), d)
        for d in deliveries
    ]


def _with(event: Event, delivery: Delivery) -> Event:
    # Whether the recipient had already read it: a recalled notice that was fetched is marked, not gone.
    return event.model_copy(update={"details": {"was_fetched": delivery.fetched_at is not None}})


async def erase_notice(session: AsyncSession, notice_id: str, actor: str, reason: str) -> Event:
    """Destroys the stored envelope: the notice's content key, wrapped for each recipient, goes with it,
    so no one can open it from deskbridge again. The audit leaves name the envelope only by its hash and
    stay as they are, so every proof and checkpoint still verifies. Caller commits."""
    notice = await session.get(NoticeRow, notice_id)
    if notice is None:
        raise NoticeError("erase_refused", f"no notice {notice_id}")
    if notice.erased_at is not None:
        raise NoticeError("erase_refused", f"notice {notice_id} was erased at {notice.erased_at.isoformat()}")
    notice.envelope, notice.erased_at = b"", utcnow()
    return Event(
        event_id=fact_id(EventType.notice_erased, notice_id),
        type=EventType.notice_erased,
        occurred_at=notice.erased_at,
        actor=actor,
        agency=notice.sender,
        notice_id=uuid.UUID(notice_id),
        case_ref=notice.case_ref,
        envelope_sha256=notice.envelope_sha256,
        details={"reason": reason[:200]},
    )


async def notice_status(session: AsyncSession, sender: str, notice_id: str) -> NoticeStatus | None:
    """Per-recipient state for the notice's sender; None for anyone else or an unknown id."""
    submission = await session.get(Submission, notice_id)
    notice = await session.get(NoticeRow, notice_id)
    known = notice if notice is not None else submission
    if known is None or known.sender != sender:
        return None
    deliveries = (await session.execute(select(Delivery).where(Delivery.notice_id == notice_id))).scalars()
    return _status(submission, notice, deliveries)


def _status(
    submission: Submission | None, notice: NoticeRow | None, deliveries: Iterable[Delivery]
) -> NoticeStatus:
    """A notice's status from the gateway's record of it and ingest's, whichever exist (one at least):
    every recipient it was sent to, `accepted` until ingest put it in that recipient's inbox."""
    known = notice if notice is not None else submission
    assert known is not None
    rows = {d.recipient: d for d in deliveries}
    recipients: list[str] = json.loads(submission.recipients) if submission is not None else list(rows)
    return NoticeStatus(
        notice_id=uuid.UUID(known.notice_id),
        sender=known.sender,
        case_ref=known.case_ref,
        submitted_at=submission.submitted_at if submission is not None else None,
        envelope_sha256=known.envelope_sha256,
        recipients=[
            recipient_status(rows[agency])
            if agency in rows
            else RecipientStatus(agency=agency, state=DeliveryState.accepted)
            for agency in recipients
        ],
    )


async def sent_notices(session: AsyncSession, sender: str, after: str | None, limit: int) -> SentPage:
    """The notices `sender` submitted through the gateway, newest first, `limit` of them after the cursor
    `after`, each with its status as notice_status gives it. Three indexed reads, whatever the history."""
    query = select(Submission).where(Submission.sender == sender)
    if after is not None:
        query = query.where(tuple_(Submission.submitted_at, Submission.notice_id) < _decode_cursor(after))
    newest = query.order_by(Submission.submitted_at.desc(), Submission.notice_id.desc()).limit(limit + 1)
    submissions = list((await session.execute(newest)).scalars())
    page = submissions[:limit]
    ids = [s.notice_id for s in page]
    stored = select(NoticeRow).options(defer(NoticeRow.envelope)).where(NoticeRow.notice_id.in_(ids))
    notices = {n.notice_id: n for n in (await session.execute(stored)).scalars()}
    deliveries: dict[str, list[Delivery]] = defaultdict(list)
    for delivery in (await session.execute(select(Delivery).where(Delivery.notice_id.in_(ids)))).scalars():
        deliveries[delivery.notice_id].append(delivery)
    items = []
    for submission in page:
        notice = notices.get(submission.notice_id)
        item = SentNotice(**dict(_status(submission, notice, deliveries[submission.notice_id])))
        if notice is not None:
            item.notice_type, item.priority, item.tlp = notice.notice_type, notice.priority, notice.tlp
        items.append(item)
    more = len(submissions) > limit
    return SentPage(items=items, next_cursor=_encode_cursor(page[-1]) if more else None)


def _encode_cursor(submission: Submission) -> str:
    place = f"v1|{submission.submitted_at.isoformat()}|{submission.notice_id}"
    return base64.urlsafe_b64encode(place.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    """(submitted_at, notice_id) of the last notice of the page before; NoticeError(bad_cursor) for
    anything this server never issued."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        version, at, notice_id = text.split("|")
        place = (datetime.fromisoformat(at), str(uuid.UUID(notice_id)))
    except ValueError as exc:  # UnicodeDecodeError and binascii.Error are ValueErrors too
        raise NoticeError("bad_cursor", "not a cursor this server issued") from exc
    if version != "v1" or place[0].tzinfo is None:
        raise NoticeError("bad_cursor", "not a cursor this server issued")
    return place
