"""Median and p99 over repeated runs: the only two numbers a figure in the report carries."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(samples: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), q in [0, 100]."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class Figure:
    """One measured quantity. For a duration p99 is the slow tail (99th percentile); for a rate it is
    also the slow tail, the rate 99 % of runs beat (1st percentile)."""

    median: float
    p99: float
    runs: int

    @classmethod
    def of_durations(cls, samples: Sequence[float]) -> Figure:
        return cls(statistics.median(samples), percentile(samples, 99), len(samples))

    @classmethod
    def of_rates(cls, samples: Sequence[float]) -> Figure:
        return cls(statistics.median(samples), percentile(samples, 1), len(samples))

    def scaled(self, factor: float) -> Figure:
        return Figure(self.median * factor, self.p99 * factor, self.runs)
