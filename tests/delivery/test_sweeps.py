"""Two ingest processes sweep the same database: a copy that one of them is expiring or escalating is
skipped by the other (FOR UPDATE SKIP LOCKED), so each copy expires and escalates once."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

from services.delivery.deadlines import escalate_due, expire_due
from services.delivery.models import Delivery, NoticeRow
from services.platform.database import make_engine, make_sessionmaker, utcnow
from tests.conftest import migrated_database
from tests.support.postgres import PostgresCluster


def _notice(expires_in: timedelta) -> NoticeRow:
    now = utcnow()
    return NoticeRow(
        notice_id=str(uuid.uuid4()),
        sender="kr-desk",
        case_ref="KD-2026-1201",
        notice_type="alert",
        priority="flash",
        tlp="amber",
        sent_at=now - timedelta(hours=1),
        expires_at=now + expires_in,
        envelope=b"{}",
        envelope_sha256="0" * 64,
        kafka_topic="notices",
        kafka_partition=0,
        kafka_offset=0,
    )


async def test_two_sweepers_split_the_work(tmp_path: Path, pg_cluster: PostgresCluster) -> None:
    engine = make_engine(await migrated_database("postgresql", tmp_path, pg_cluster))
    sessions = make_sessionmaker(engine)
    try:
        late, gone = _notice(timedelta(days=1)), _notice(-timedelta(minutes=1))
        async with sessions() as session:
            session.add_all([late, gone])
            await session.flush()
            overdue = utcnow() - timedelta(minutes=5)
            for recipient in ("kh-cnp", "aseanapol"):
                session.add_all(
                    [
                        Delivery(
                            notice_id=late.notice_id,
                            recipient=recipient,
                            state="delivered",
                            delivered_at=overdue,
                            ack_due_at=overdue,
                        ),
                        Delivery(
                            notice_id=gone.notice_id,
                            recipient=recipient,
                            state="delivered",
                            delivered_at=overdue,
                        ),
                    ]
                )
            await session.commit()
        async with sessions() as first, sessions() as second:
            assert len(await escalate_due(first)) == 2 and len(await expire_due(first)) == 2
            # The first sweep holds its copies until it commits: the second skips them, never waits.
            assert await escalate_due(second) == [] and await expire_due(second) == []
            await first.commit()
            await second.rollback()
            assert await escalate_due(second) == [] and await expire_due(second) == []
    finally:
        await engine.dispose()
