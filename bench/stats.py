"""Medians, percentiles and ratios: the only numbers the report prints (never one timing)."""

from __future__ import annotations

import statistics


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], p: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default); p in [0, 100]."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * p / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def ratio(value: float, reference: float) -> str:
    return f"{value / reference:.2f}x" if reference else "-"
