"""Request-scoped access to what the gateway's lifespan built (no module globals)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from services.common.directory import Principal
from services.common.http import require
from services.common.kafka import EventPublisher
from services.common.keys import AgencyKeys
from services.common.settings import Settings


def publisher(request: Request) -> EventPublisher:
    value: EventPublisher = request.app.state.publisher
    return value


def settings(request: Request) -> Settings:
    value: Settings = request.app.state.settings
    return value


def desk_keys(request: Request) -> AgencyKeys:
    keys: AgencyKeys | None = request.app.state.desk_keys
    if keys is None:
        raise HTTPException(503, "the desk's signing keys are not loaded on this gateway")
    return keys


Publisher = Annotated[EventPublisher, Depends(publisher)]
DeskKeys = Annotated[AgencyKeys, Depends(desk_keys)]
Agency = Annotated[Principal, Depends(require("agency"))]
Admin = Annotated[Principal, Depends(require("admin"))]
Anyone = Annotated[Principal, Depends(require("agency", "auditor", "admin"))]
