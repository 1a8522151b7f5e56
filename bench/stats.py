"""Pure helpers for summarising samples: no clocks, no I/O (the smoke test covers them)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100) by linear interpolation between closest ranks (numpy's
    default), so p50 of an even count is the mean of the two middle values. ValueError on no values."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} is outside 0..100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Summary:
    """Count, p50, p95 and max of a sample, in its unit."""

    n: int
    p50: float
    p95: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        return cls(len(values), percentile(values, 50), percentile(values, 95), max(values))

    def text(self, scale: float = 1.0, unit: str = "s", digits: int = 2) -> str:
        return (f"p50 {self.p50 * scale:.{digits}f} {unit}, p95 {self.p95 * scale:.{digits}f} {unit}, "
                f"max {self.max * scale:.{digits}f} {unit} (n={self.n})")


def rate(count: int, seconds: float) -> float:
    """Items per second; 0 for an empty interval."""
    return count / seconds if seconds > 0 else 0.0
