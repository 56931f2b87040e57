"""The values a configuration field accepts, declared once next to the field.

    @dataclass(frozen=True)
    class PolicyConfig:
        retry_hint_ms: int = field(default=1000, metadata=limit(1, 3_600_000))

        def __post_init__(self) -> None:
            bad = violation(self)             # ("retry_hint_ms", "must be 1..3600000, not 0")
            if bad is not None:
                raise PolicyError(*bad)

    limits(PolicyConfig)["retry_hint_ms"]     # Limit(lo=1, hi=3600000)

A `Limit` is a range of numbers: integers (the default) or finite numbers, each end
inclusive, open (`lo_open`: the value must be above `lo`) or absent. The configuration's
own check (`violation`) and every parser that fills it (the topology file, the console)
read the same `Limit`, so a value is refused with the same words wherever it comes from,
and before anything is built from it. Standard library only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

LIMIT = "limit"  # the dataclass field metadata key


@dataclass(frozen=True)
class Limit:
    lo: int | float | None = None
    hi: int | float | None = None
    integer: bool = True  # False: any finite number (an int is taken as a float)
    lo_open: bool = False  # True: the value must be greater than lo

    def span(self) -> str:
        """The accepted range in words: "1..64", ">= 0", "> 0", "> 0 and <= 315360000"."""
        lo = None if self.lo is None else _num(self.lo)
        hi = None if self.hi is None else _num(self.hi)
        if lo is not None and hi is not None and not self.lo_open:
            return f"{lo}..{hi}"
        parts = []
        if lo is not None:
            parts.append(f"{'>' if self.lo_open else '>='} {lo}")
        if hi is not None:
            parts.append(f"<= {hi}")
        return " and ".join(parts) or "any value"

    def kind(self) -> str:
        return "an integer" if self.integer else "a finite number"

    def type_problem(self, value: object) -> str | None:
        """Why `value` is not of the field's type (a bool is neither an int nor a number),
        or None."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                (self.integer and not isinstance(value, int)):
            return f"must be {self.kind()}"
        if not self.integer and not math.isfinite(value):
            return f"must be a finite number, not {value!r}"
        return None

    def range_problem(self, value: int | float) -> str | None:
        """Why the number `value` is out of range ("must be 1..64, not 0"), or None."""
        low = self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo)
        high = self.hi is not None and value > self.hi
        if low or high:
            return f"must be {self.span()}, not {value!r}"
        return None

    def problem(self, value: object) -> str | None:
        """Why `value` is refused (type, then range), or None if it is accepted."""
        bad = self.type_problem(value)
        if bad is not None:
            return bad
        assert isinstance(value, (int, float))
        return self.range_problem(value)


def _num(v: int | float) -> str:
    return str(int(v)) if isinstance(v, int) or v.is_integer() else repr(v)


def limit(lo: int | float | None = None, hi: int | float | None = None, *,
          integer: bool = True, lo_open: bool = False) -> Mapping[str, Limit]:
    """Field metadata declaring a field's limit: `field(default=..., metadata=limit(1, 64))`."""
    return {LIMIT: Limit(lo, hi, integer, lo_open)}


def limits(cls: Any) -> dict[str, Limit]:
    """The limits a dataclass (class or instance) declares, by field name, in field order."""
    return {f.name: f.metadata[LIMIT] for f in dataclasses.fields(cls) if LIMIT in f.metadata}


def violation(obj: Any) -> tuple[str, str] | None:
    """The first field of the dataclass instance `obj` outside its limit, as (field name,
    reason), or None. Optional fields (None) are not checked."""
    for name, lim in limits(obj).items():
        value = getattr(obj, name)
        if value is None:
            continue
        bad = lim.problem(value)
        if bad is not None:
            return name, bad
    return None
