"""Request-scoped access to what the gateway's lifespan built (no module globals)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.events import Event
from services.common.admission import Freshness
from services.common.directory import Principal
from services.common.http import require
from services.common.kafka import EventPublisher
from services.common.keys import KEYS_FILE, AgencyKeys, KeyFileError
from services.common.settings import Settings


def publisher(request: Request) -> EventPublisher:
    value: EventPublisher = request.app.state.publisher
    return value


def settings(request: Request) -> Settings:
    value: Settings = request.app.state.settings
    return value


class DeskKeyFile:
    """The desk's key file, re-read when it changes: `deskbridge keys rotate --as kr-desk` takes effect
    without a restart."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / KEYS_FILE
        self._stamp: tuple[int, int] | None = None
        self._keys: AgencyKeys | None = None

    def current(self) -> AgencyKeys:
        try:
            stat = self.path.stat()
        except FileNotFoundError as exc:
            raise HTTPException(503, "the desk's signing keys are not on this gateway") from exc
        stamp = (stat.st_mtime_ns, stat.st_size)
        if self._keys is None or stamp != self._stamp:
            try:
                self._keys = AgencyKeys.load(self.path.parent)
            except KeyFileError as exc:
                raise HTTPException(503, f"the desk's signing keys cannot be read: {exc}") from exc
            self._stamp = stamp
        return self._keys


def desk_keys(request: Request) -> AgencyKeys:
    keys: DeskKeyFile = request.app.state.desk_keys
    return keys.current()


def freshness(request: Request) -> Freshness:
    value: Settings = request.app.state.settings
    return Freshness.of(value.freshness_s, value.clock_skew_s)


Publisher = Annotated[EventPublisher, Depends(publisher)]
Config = Annotated[Settings, Depends(settings)]
Fresh = Annotated[Freshness, Depends(freshness)]
DeskKeys = Annotated[AgencyKeys, Depends(desk_keys)]
Agency = Annotated[Principal, Depends(require("agency"))]
SignedAgency = Annotated[Principal, Depends(require("agency", by_bearer=False))]
Admin = Annotated[Principal, Depends(require("admin"))]
Anyone = Annotated[Principal, Depends(require("agency", "auditor", "admin"))]


async def commit_audited(
    session: AsyncSession, publisher: EventPublisher, events: Sequence[Event], source: str
) -> None:
    """A directory change lands only once its audit events are in Kafka: flush first so constraint
    errors surface before anything is announced, then publish (Kafka down: 503, nothing committed),
    then commit."""
    await session.flush()
    for event in events:
        await publisher.publish(event, source)
    await session.commit()
