"""Audit's handler: a batch of records from every topic becomes entries appended in one transaction."""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.audit.records import to_event
from services.envelope.service import Freshness
from services.platform import tracing
from services.platform.consumer import Batch
from services.platform.kafka import Topics
from services.transparency import service as audit_log
from services.transparency.storage import TreeMemory
from services.trust.keyring import DirectoryCache

log = structlog.get_logger("audit")


@dataclass
class AuditHandler:
    """Commit policy: entries are committed before the offsets; a redelivered record has the same
    event id, which append() skips, so each fact is in the log once. `tree` learns each append once its
    transaction committed."""

    sessions: async_sessionmaker[AsyncSession]
    topics: Topics
    freshness: Freshness
    tree: TreeMemory
    directory: DirectoryCache = field(default_factory=DirectoryCache)

    async def __call__(self, records: Batch) -> None:
        async with self.sessions() as session:
            events = []
            directory = None
            for record in records:
                with tracing.within(record):  # the consume loop's span of the record
                    if directory is None and record.topic == self.topics.notices:
                        directory = await self.directory.view(session)  # read once, if needed
                    event = await to_event(session, directory, self.topics, record, self.freshness)
                    if event is None:
                        log.warning("unreadable event skipped", topic=record.topic, offset=record.offset)
                        continue
                events.append(event)
            if session.get_bind().dialect.name != "postgresql":
                # SQLite cannot turn a read transaction into a write once another connection wrote.
                # PostgreSQL's READ COMMITTED reads the log afresh after append's table lock, so the
                # reads and the append share one transaction (no ROLLBACK and BEGIN between).
                await session.rollback()
            growth = await audit_log.append(session, events, self.tree)
            await session.commit()
        self.tree.committed(growth)
        if growth.added:
            log.debug("appended", entries=growth.added)
