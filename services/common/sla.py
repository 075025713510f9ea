"""Acknowledgement deadlines by priority: past its deadline, an unacknowledged notice escalates."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Sla:
    flash: timedelta
    immediate: timedelta
    routine: timedelta

    def due(self, priority: str, delivered_at: datetime) -> datetime:
        wait: timedelta = getattr(self, priority)
        return delivered_at + wait


DEFAULT_SLA = Sla(timedelta(minutes=15), timedelta(hours=4), timedelta(days=3))
