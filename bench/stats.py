"""Small helpers for benchmark reports: percentiles, one-line distributions, and the
figures of results.json (every figure carries its unit and n)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty sequence."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))
    return s[k]


def describe(values: Sequence[float], unit: str = "s", scale: float = 1.0) -> str:
    v = [x * scale for x in values]
    return (f"n={len(v)} min={min(v):.3f}{unit} p50={statistics.median(v):.3f}{unit} "
            f"p99={percentile(v, 99):.3f}{unit} max={max(v):.3f}{unit}")


def dist(values: Sequence[float], unit: str, digits: int = 3) -> dict[str, Any]:
    """A distribution for results.json: unit, n, min, p50, p90, p99, max, mean (n=0: only
    unit and n)."""
    v = [float(x) for x in values]
    if not v:
        return {"unit": unit, "n": 0}
    return {"unit": unit, "n": len(v), "min": round(min(v), digits),
            "p50": round(statistics.median(v), digits),
            "p90": round(percentile(v, 90), digits), "p99": round(percentile(v, 99), digits),
            "max": round(max(v), digits), "mean": round(statistics.fmean(v), digits)}


def one_line(d: dict[str, Any], unit: str = "", scale: float = 1.0) -> str:
    """A distribution of results.json (`dist`) on one line, as `describe` prints values."""
    if not d.get("n"):
        return "n=0"
    u = unit or d["unit"]
    return f"n={d['n']} " + " ".join(f"{k}={d[k] * scale:.3f}{u}"
                                     for k in ("min", "p50", "p99", "max"))


def scalar(value: float | int | None, unit: str, n: int = 1, **extra: Any) -> dict[str, Any]:
    """One figure for results.json."""
    v = round(value, 3) if isinstance(value, float) else value
    return {"value": v, "unit": unit, "n": n, **extra}


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ys against xs."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0
