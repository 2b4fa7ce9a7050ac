"""The statistics of results/paper.md: per-seed readings of the runs and the intervals that
compare them (95% Student-t across seeds, Welch between methods)."""

from __future__ import annotations

import math
from typing import Any

from esmaml.sweep import Interval


def last(records: list[dict[str, Any]], key: str = "post") -> list[float]:
    return [r["evals"][key][-1] for r in records]


def first(records: list[dict[str, Any]], key: str = "post") -> list[float]:
    return [r["evals"][key][0] for r in records]


def welch(a: list[float], b: list[float]) -> Interval:
    """mean(a) - mean(b) and its 95% Welch interval (unequal variances, Welch-Satterthwaite
    degrees of freedom): independent seeds, not paired."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        return Interval(sum(a) / len(a) - sum(b) / len(b), math.nan, math.nan, 0)
    result = stats.ttest_ind(a, b, equal_var=False)
    low, high = result.confidence_interval(0.95)
    diff = sum(a) / len(a) - sum(b) / len(b)
    return Interval(diff, float(low), float(high), len(a) + len(b))


def ci(interval: Interval, digits: int = 1, sign: bool = True) -> str:
    f = f"{{:{'+' if sign else ''}.{digits}f}}"
    if math.isnan(interval.low):
        return f.format(interval.mean)
    return f"{f.format(interval.mean)} [{f.format(interval.low)}, {f.format(interval.high)}]"


def direction(interval: Interval) -> int:
    """+1 / -1 when the 95% interval lies above / below zero, else 0."""
    if interval.low > 0:
        return 1
    if interval.high < 0:
        return -1
    return 0


def sd(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / max(1, len(values) - 1))
