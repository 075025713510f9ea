"""Fair and bounded: a per-agency token bucket on submissions, and a cap on what waits in one inbox."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.db import Delivery
from services.common.directory import Principal
from services.gateway.deps import Agency


@dataclass
class TokenBuckets:
    """`rate` submissions per second per agency, `burst` at once. In memory: each gateway instance
    limits on its own, which bounds every agency to rate x instances."""

    rate: float
    burst: float
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)  # agency -> (tokens, at)

    def take(self, agency: str, now: float | None = None) -> float:
        """0 when admitted; otherwise the seconds until a token is free."""
        at = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(agency, (self.burst, at))
        tokens = min(self.burst, tokens + (at - last) * self.rate)
        if tokens >= 1:
            self._buckets[agency] = (tokens - 1, at)
            return 0.0
        self._buckets[agency] = (tokens, at)
        return (1 - tokens) / self.rate


async def rate_limited(request: Request, principal: Agency) -> Principal:
    buckets: TokenBuckets = request.app.state.buckets
    wait = buckets.take(principal.name)
    if wait > 0:
        raise HTTPException(
            429,
            f"{principal.name} is sending faster than {buckets.rate:g}/s; retry in {max(wait, 0.1):.1f} s",
            {"Retry-After": str(max(1, math.ceil(wait)))},
        )
    return principal


LimitedAgency = Annotated[Principal, Depends(rate_limited)]


async def check_inbox_room(session: AsyncSession, cap: int, recipients: Sequence[str]) -> None:
    """Refuses a notice to an agency whose inbox holds `cap` unacknowledged ones: it is not reading,
    and piling more on only hides the flood. The count stops at the cap, so it stays cheap."""
    for agency in recipients:
        pending = (
            select(Delivery.seq)
            .where(Delivery.recipient == agency, Delivery.state != "acknowledged")
            .where(Delivery.recalled_at.is_(None), Delivery.expired_at.is_(None))
            .limit(cap)
            .subquery()
        )
        if (await session.execute(select(func.count()).select_from(pending))).scalar_one() >= cap:
            raise HTTPException(
                429,
                f"the inbox of {agency} holds {cap} unacknowledged notices; retry once it reads them",
                {"Retry-After": "60"},
            )
