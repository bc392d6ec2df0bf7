"""Figures the benchmarks print, computed one way for all of them."""

from __future__ import annotations


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank on the sorted values: a value that was measured, never a blend."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
