"""The desk's submission path: validate, seal with the desk's keys, make durable in Kafka, record."""

from __future__ import annotations

import json

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.notices import Notice, NoticeDraft
from services.common.db import Submission, utcnow
from services.common.directory import DirectoryError, encryption_keys
from services.common.envelope import parse_envelope, seal_notice
from services.common.kafka import EventPublisher, cloud_headers
from services.common.keys import AgencyKeys


async def submit_notice(
    session: AsyncSession, publisher: EventPublisher, desk: AgencyKeys, draft: NoticeDraft
) -> Submission:
    """Returns only after Kafka holds the envelope on every in-sync replica (acks=all)."""
    notice_id = str(draft.notice_id)
    if await session.get(Submission, notice_id) is not None:
        raise DirectoryError(409, f"notice id {notice_id} was already submitted; choose a new id")
    if desk.agency in draft.recipients:
        raise DirectoryError(422, "the desk cannot address a notice to itself")
    recipients = await encryption_keys(session, draft.recipients)
    notice = Notice(**draft.model_dump(), sender=desk.agency, sent_at=utcnow())
    envelope = parse_envelope(seal_notice(notice, desk.signer(), recipients))
    partition, offset = await publisher.send(
        publisher.topics.notices,
        notice.case_ref,
        envelope.raw,
        cloud_headers("org.deskbridge.notice.submitted", notice_id, f"deskbridge/gateway/{desk.agency}"),
    )
    submission = Submission(
        notice_id=notice_id,
        sender=desk.agency,
        case_ref=notice.case_ref,
        recipients=json.dumps(notice.recipients),
        envelope_sha256=envelope.sha256,
        kafka_partition=partition,
        kafka_offset=offset,
        submitted_at=utcnow(),
    )
    session.add(submission)
    try:
        await session.commit()
    except IntegrityError as exc:
        # A concurrent request with the same id won the race; ingest drops the second envelope as a replay.
        await session.rollback()
        raise DirectoryError(409, f"notice id {notice_id} was already submitted; choose a new id") from exc
    return submission
