"""Fair and bounded: a per-agency token bucket on submissions, and a cap on what waits in one inbox."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.delivery.models import Delivery
from services.notices.errors import NoticeError


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

    def admit(self, agency: str) -> None:
        """Takes a token for one submission by `agency`, or refuses with the seconds to wait."""
        wait = self.take(agency)
        if wait > 0:
            raise NoticeError(
                "rate_limited",
                f"{agency} is sending faster than {self.rate:g}/s; retry in {max(wait, 0.1):.1f} s",
                retry_after_s=max(1, math.ceil(wait)),
            )


@dataclass
class InboxRoom:
    """Refuses a notice to an agency whose inbox holds `cap` unacknowledged ones: it is not reading, and
    piling more on only hides the flood.

    Counting on every POST cost more than the rest of the submission, so each inbox's count is re-read
    at most every `recheck_s` and raised by every notice this gateway accepts meanwhile. A refusal is
    always made on a fresh count, so an inbox that was just read takes notices again at once; what
    other gateways add within `recheck_s` may overshoot the cap, which is a brake, not a quota."""

    cap: int
    recheck_s: float
    _counts: dict[str, tuple[int, float]] = field(default_factory=dict)  # agency -> (pending, counted at)

    async def check(self, reader: AsyncSession, recipients: Sequence[str]) -> None:
        now = time.monotonic()
        for agency in recipients:
            pending, counted_at = self._counts.get(agency, (0, -math.inf))
            if now - counted_at > self.recheck_s or pending >= self.cap:
                pending = await _pending(reader, agency, self.cap)
                self._counts[agency] = (pending, now)
            if pending >= self.cap:
                raise NoticeError(
                    "inbox_full",
                    f"the inbox of {agency} holds {self.cap} unacknowledged notices; "
                    "retry once it reads them",
                    retry_after_s=60,
                )

    def accepted(self, recipients: Sequence[str]) -> None:
        for agency in recipients:
            pending, counted_at = self._counts.get(agency, (0, -math.inf))
            self._counts[agency] = (pending + 1, counted_at)


async def _pending(reader: AsyncSession, agency: str, cap: int) -> int:
    """Unacknowledged notices in `agency`'s inbox, counted only up to `cap` so it stays cheap."""
    pending = (
        select(Delivery.seq)
        .where(Delivery.recipient == agency, Delivery.state != "acknowledged")
        .where(Delivery.recalled_at.is_(None), Delivery.expired_at.is_(None))
        .limit(cap)
        .subquery()
    )
    return int((await reader.execute(select(func.count()).select_from(pending))).scalar_one())
