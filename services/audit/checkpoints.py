"""The audit service's checkpoint publisher and its record of auditor queries."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas.events import Event, EventType
from services.common import auditlog
from services.common.checkpoint import NoteSigner
from services.common.db import TlogCheckpoint
from services.common.directory import Principal
from services.common.tlog import TreeError
from services.common.treehead import TreeCheck, check_tree, sign_checkpoint

log = structlog.get_logger("audit")


@dataclass
class AuditorQueries:
    """Reading the log is itself audited, rate-bound so reading never floods the log it reads: requests
    are tallied in memory per caller and written as one auditor.query entry per caller per window,
    naming the routes and how often each was called."""

    window: timedelta
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    _tally: dict[tuple[str, str | None], dict[str, int]] = field(default_factory=dict)

    def record(self, caller: Principal, route: str) -> None:
        routes = self._tally.setdefault((caller.name, caller.agency), {})
        routes[route] = routes.get(route, 0) + 1

    def due(self, now: datetime) -> bool:
        return bool(self._tally) and now - self.started >= self.window

    def drain(self, now: datetime) -> list[Event]:
        """The window's entries, one per caller; the window restarts."""
        events = [
            Event(
                event_id=f"auditor.query:{self.run_id}:{self.started.isoformat()}:{actor}"[:128],
                type=EventType.auditor_query,
                occurred_at=now,
                actor=actor,
                agency=agency,
                details={
                    "since": self.started.isoformat(),
                    "requests": sum(routes.values()),
                    "routes": ",".join(f"{route}={n}" for route, n in sorted(routes.items())),
                },
            )
            for (actor, agency), routes in sorted(self._tally.items())
        ]
        self._tally, self.started = {}, now
        return events


@dataclass
class Publisher:
    """Signs checkpoints on a steady interval when the log grew, and on demand. Refuses to sign while
    the tree rebuilt from the entries disagrees with what is stored (checked in full at start-up)."""

    sessions: async_sessionmaker[AsyncSession]
    signer: NoteSigner | None
    queries: AuditorQueries
    check: TreeCheck | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def start(self) -> None:
        if self.signer is None:
            log.error("no audit log key: checkpoints will not be signed")
            return
        async with self._lock, self.sessions() as session:
            self.check = await check_tree(session, self.signer.verifier())
        if not self.check.healthy:
            log.error(
                "AUDIT TREE DOES NOT MATCH ITS ENTRIES: no checkpoint will be signed",
                problems=self.check.problems,
            )
        else:
            log.info("audit tree checked", size=self.check.size)

    async def flush_queries(self, force: bool = False) -> None:
        now = datetime.now(UTC)
        if not (force or self.queries.due(now)):
            return
        events = self.queries.drain(now)
        if events:
            async with self.sessions() as session:
                await auditlog.append(session, events)
                await session.commit()

    async def publish(self) -> TlogCheckpoint | None:
        """A new checkpoint if the log grew since the last one; raises TreeError if it cannot sign."""
        if self.signer is None or self.check is None:
            raise TreeError("the audit service has no log key and signs no checkpoints")
        async with self._lock, self.sessions() as session:
            row = await sign_checkpoint(session, self.signer, self.check)
            await session.commit()
        if row is not None:
            log.info("checkpoint signed", size=row.size, root=row.root.hex())
        return row

    async def run(self, interval_s: float, stop: asyncio.Event) -> None:
        refused = False
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
            try:
                await self.flush_queries(force=stop.is_set())
                await self.publish()
                refused = False
            except TreeError as exc:
                if not refused:  # once per episode, not once per tick
                    log.error("checkpoint refused", error=str(exc))
                refused = True
            except Exception:  # the loop outlives a database hiccup; the next tick tries again
                log.exception("checkpoint publishing failed")
