"""Wakes waiting subscribers (long-poll, SSE) the moment ingest delivers to their agency.

Each gateway reads the deliveries topic from its end, with no consumer group: every instance sees
every event, and none of them owns an offset. The database stays the truth; a wake-up only says
"look again", and waiters look again at least every `FALLBACK_S` even if no event comes.

Ingest commits an inbox row before it announces the delivery, so a waiter woken by a delivery finds
the row. An escalation is announced before the sweep commits it (audited first, as commit_audited
does), so a waiter woken by one (the stream shows escalations) may look before it is there: a waiter
that found nothing shortly after its agency's last escalation looks again soon (`wait`) rather than
after `FALLBACK_S`. Deliveries start no such looks: each would be a query of a row already handed out.

Reading every delivery event costs about 1 % of the gateway's CPU under load (py-spy, 3 recipients a
notice), so PostgreSQL LISTEN/NOTIFY, which would add a NOTIFY to every ingest commit, was not worth it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import ValidationError
from tenacity import wait_fixed

from schemas.events import Event, EventType
from services.platform.consumer import until_stopped
from services.platform.kafka import KafkaAccess, Topics

log = structlog.get_logger("gateway.notify")
FALLBACK_S = 1.0
RECENT_S = 0.25  # an announcement made before its commit, this recent, may not be committed yet
SOON_S = 0.002
RECONNECT = wait_fixed(2)
WAKING = {EventType.notice_delivered, EventType.notice_escalated}
BEFORE_COMMIT = {EventType.notice_escalated}  # announced before committed (services/ingest/main.py)


class InboxNotifier:
    def __init__(self, recheck_s: float = FALLBACK_S) -> None:
        self._versions: dict[str, int] = defaultdict(int)
        self._announced: dict[str, float] = {}  # when each agency's last announcement before commit came
        self._changed = asyncio.Condition()
        self.recheck_s = recheck_s
        self.draining = False

    async def drain(self) -> None:
        """The server is stopping: every waiter returns now with what it has."""
        async with self._changed:
            self.draining = True
            self._changed.notify_all()

    def version(self, agency: str) -> int:
        return self._versions[agency]

    async def bump(self, agency: str, before_commit: bool = False) -> None:
        """Wakes the agency's waiters; `before_commit`: what is announced may not be committed yet."""
        async with self._changed:
            self._versions[agency] += 1
            if before_commit:
                self._announced[agency] = asyncio.get_running_loop().time()
            self._changed.notify_all()

    async def wait(self, agency: str, since: int, at_most: float) -> None:
        """Returns once the agency's version moved past `since`, or after `at_most` s (at most recheck_s).
        A waiter that found nothing within RECENT_S of its agency's last announcement before commit (it
        may be committed next) waits only as long again as the announcement is old, at least SOON_S:
        its looks follow the commit closely at first, then double apart (eight looks at most)."""
        age = asyncio.get_running_loop().time() - self._announced.get(agency, -RECENT_S)
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self._versions[agency] != since or self.draining),
                    min(at_most, max(SOON_S, age) if age < RECENT_S else self.recheck_s),
                )

    async def run(self, access: KafkaAccess, topics: Topics, stop: asyncio.Event) -> None:
        """Follows the deliveries topic until `stop`; reconnects after broker trouble."""
        # Any failure is retried: a notifier outage only slows waiters to FALLBACK_S polling.
        reconnecting = until_stopped(stop, Exception, RECONNECT, log, "notifier lost the broker; retrying")
        async for attempt in reconnecting:
            if stop.is_set():
                return
            with attempt:
                await self._follow(access, topics, stop)

    async def _follow(self, access: KafkaAccess, topics: Topics, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(**access.client_args(), enable_auto_commit=False)
        try:
            await consumer.start()
            assigned = [TopicPartition(topics.deliveries, p) for p in await _partitions(access, topics)]
            consumer.assign(assigned)
            await consumer.seek_to_end(*assigned)
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    for record in records:
                        await self._see(record.value or b"")
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()

    async def _see(self, value: bytes) -> None:
        try:
            event = Event.model_validate_json(value)
        except ValidationError:
            return
        if event.type in WAKING and event.agency:
            await self.bump(event.agency, event.type in BEFORE_COMMIT)


async def _partitions(access: KafkaAccess, topics: Topics) -> list[int]:
    admin = AIOKafkaAdminClient(**access.client_args())
    await admin.start()
    try:
        [described] = await admin.describe_topics([topics.deliveries])
    finally:
        await admin.close()
    partitions = [int(p["partition"]) for p in described.get("partitions", [])]
    if described.get("error_code") or not partitions:
        raise LookupError(f"topic {topics.deliveries} is not there yet")
    return partitions
