"""The lease that makes one audit replica the signer of checkpoints while others stand by: a row in the
database (table audit_lease) naming the holder, until when, and an epoch bumped on every change of
holder. The holder renews it every third of its term; a replica takes it over once it has expired. Times
are the database's clock, so the replicas' own clocks never disagree about who holds it.

Fencing: the signing transaction itself renews the lease on the condition that this replica still holds
it with the same epoch (`fence`). The conditional UPDATE locks the row until the checkpoint commits, so
a takeover waits for it, and a holder that was paused past its term finds the lease gone and signs
nothing. A row rather than a session-level advisory lock: a paused process keeps its connection, and its
advisory lock with it, for ever; a lease runs out. It also works on SQLite for `make run`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.platform.errors import Unavailable
from services.platform.outage import TRANSIENT
from services.transparency.models import AuditLease

log = structlog.get_logger("audit")
CHECKPOINTS = "checkpoints"


class NotLeaseHolder(Unavailable):
    """This replica does not hold the checkpoint lease (or lost it): another one signs."""

    code = "checkpoint_standby"


def replica_name() -> str:
    """Unique per process: the host (a pod's name under Kubernetes), the pid, and a random tail."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"[:128]


async def database_now(session: AsyncSession) -> datetime:
    """The database's clock, the one all replicas share (SQLite is local: the process's own clock)."""
    if session.get_bind().dialect.name == "postgresql":
        now: datetime = (await session.execute(select(func.clock_timestamp()))).scalar_one()
        return now.astimezone(UTC)
    return datetime.now(UTC)


@dataclass(frozen=True)
class Holding:
    """The lease as last read: who holds it, in which epoch, until when."""

    holder: str
    epoch: int
    expires_at: datetime


@dataclass
class Lease:
    sessions: async_sessionmaker[AsyncSession]
    term: timedelta
    holder: str = field(default_factory=replica_name)
    epoch: int | None = None  # while this replica holds the lease
    seen: Holding | None = None
    _valid_until: float = 0.0  # monotonic: held no longer than a term after the last renewal began

    @property
    def held(self) -> bool:
        return self.epoch is not None and time.monotonic() < self._valid_until

    def status(self) -> dict[str, object]:
        """For /healthz: this replica's role and the holder as last read."""
        seen = self.seen
        return {
            "role": "active" if self.held else "standby",
            "replica": self.holder,
            "holder": seen.holder if seen else None,
            "epoch": seen.epoch if seen else None,
            "expires_at": seen.expires_at.isoformat() if seen else None,
        }

    async def _renew(self, session: AsyncSession, now: datetime) -> bool:
        """Extends the lease if this replica still holds it in its epoch (and locks the row till commit)."""
        if self.epoch is None:
            return False
        renewed = await session.execute(
            update(AuditLease)
            .where(
                AuditLease.name == CHECKPOINTS,
                AuditLease.holder == self.holder,
                AuditLease.epoch == self.epoch,
                AuditLease.expires_at > now,
            )
            .values(expires_at=now + self.term)
            .returning(AuditLease.epoch)
        )
        return renewed.scalar() is not None

    async def tick(self) -> bool:
        """Renews the lease if held, else takes it over if it expired; True when this call took it over."""
        began = time.monotonic()
        previous = self.epoch
        taken = False
        async with self.sessions() as session:
            now = await database_now(session)
            renewed = await self._renew(session, now)
            if not renewed:
                self.epoch = None
                taken_epoch = (
                    await session.execute(
                        update(AuditLease)
                        .where(AuditLease.name == CHECKPOINTS, AuditLease.expires_at <= now)
                        .values(holder=self.holder, epoch=AuditLease.epoch + 1, expires_at=now + self.term)
                        .returning(AuditLease.epoch)
                    )
                ).scalar()
                if taken_epoch is not None:
                    self.epoch, taken = int(taken_epoch), True
            row = await session.get_one(AuditLease, CHECKPOINTS, populate_existing=True)
            await session.commit()
        last = self.seen
        self.seen = Holding(row.holder, row.epoch, row.expires_at)
        if self.epoch is not None:
            self._valid_until = began + self.term.total_seconds()
        if previous is not None and not renewed:
            log.warning("checkpoint lease lost", replica=self.holder, epoch=previous, holder=row.holder)
        if taken:
            log.warning(
                "checkpoint lease taken over: this replica signs checkpoints",
                replica=self.holder,
                epoch=self.epoch,
                previous=last.holder if last else None,
            )
        return taken

    async def fence(self, session: AsyncSession) -> None:
        """Inside a signing transaction: NotLeaseHolder unless this replica still holds the lease in its
        epoch; the row stays locked until the caller commits, so no takeover overlaps the signing."""
        if not self.held or not await self._renew(session, await database_now(session)):
            lost, self.epoch = self.epoch, None
            if lost is not None:
                log.warning("checkpoint lease lost", replica=self.holder, epoch=lost)
            holder = self.seen.holder if self.seen else "another replica"
            raise NotLeaseHolder(
                f"this audit replica does not hold the checkpoint lease ({holder or 'nobody'} does); "
                "the active replica signs",
                retry_after_s=max(1, round(self.term.total_seconds() / 3)),
            )

    async def release(self) -> None:
        """Ends the term now (a clean stop, after the last checkpoint), so a standby takes over at its
        next tick; with the database away the term simply runs out."""
        if self.epoch is None:
            return
        try:
            await self._release()
        except TRANSIENT as exc:
            log.warning("checkpoint lease not released: it runs out by itself", error=type(exc).__name__)

    async def _release(self) -> None:
        async with self.sessions() as session:
            now = await database_now(session)
            await session.execute(
                update(AuditLease)
                .where(
                    AuditLease.name == CHECKPOINTS,
                    AuditLease.holder == self.holder,
                    AuditLease.epoch == self.epoch,
                )
                .values(expires_at=now)
            )
            await session.commit()
        log.info("checkpoint lease released", replica=self.holder, epoch=self.epoch)
        self.epoch = None

    async def keep(self, stop: asyncio.Event, on_taken: Callable[[], Awaitable[object]]) -> None:
        """Renews or takes over every third of a term until `stop`; calls `on_taken` after a takeover."""
        while not stop.is_set():
            try:
                if await self.tick():
                    await on_taken()
            except TRANSIENT as exc:  # the database away: the next tick tries again; fencing guards signing
                log.warning("checkpoint lease: database out of reach, retrying", error=type(exc).__name__)
            except Exception:
                log.exception("checkpoint lease: renewing failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.term.total_seconds() / 3)
