"""Small helpers for benchmark reports: percentiles and one-line distributions."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty sequence."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))
    return s[k]


def describe(values: Sequence[float], unit: str = "s", scale: float = 1.0) -> str:
    v = [x * scale for x in values]
    return (f"n={len(v)} min={min(v):.3f}{unit} p50={statistics.median(v):.3f}{unit} "
            f"p99={percentile(v, 99):.3f}{unit} max={max(v):.3f}{unit}")
