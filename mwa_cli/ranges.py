"""Declared ranges of numeric values: options, config-file values, method options, numbers read from run files.

A `Range` says what a number may be (finite always; bounds, open or closed; whole or not); `out_of_range` finds the
first value of a mapping outside its entry in a table of them, for the caller to name in its own words.
The tables sit beside what they describe (`mwa_cli.train.config.RANGES`, each method config's ``ranges``,
`mwa_cli.run_files`), so a rule is written once, as data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class Range:
    """lo ≤ x ≤ hi (``lo_open`` / ``hi_open``: strict), x finite; ``whole``: x is a whole number."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    whole: bool = False

    def contains(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.whole and not (isinstance(value, int) or float(value).is_integer()):
            return False
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return not (self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi))

    def describe(self) -> str:
        """'a whole number from 0 to 4294967295', 'a number in (0, 10]', 'a number ≥ 0'."""
        kind = "a whole number" if self.whole else "a number"
        if self.lo is not None and self.hi is not None:
            if self.whole and not (self.lo_open or self.hi_open):
                return f"{kind} from {_num(self.lo)} to {_num(self.hi)}"
            left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
            return f"{kind} in {left}{_num(self.lo)}, {_num(self.hi)}{right}"
        if self.lo is not None:
            return f"{kind} {'>' if self.lo_open else '≥'} {_num(self.lo)}"
        if self.hi is not None:
            return f"{kind} {'<' if self.hi_open else '≤'} {_num(self.hi)}"
        return f"a finite {kind.removeprefix('a ')}"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e16 else f"{x:g}"


# shared by every command that takes a seed: what torch.manual_seed, numpy and random all accept
SEED = Range(0, 2**32 - 1, whole=True)
COUNT = Range(1, 2**31 - 1, whole=True)  # a count of steps, rows, checks ...: at least 1, fits every int type


def out_of_range(values: Mapping[str, Any], ranges: Mapping[str, Range]) -> tuple[str, Any, Range] | None:
    """The first (name, value, range) of `values` outside its declared range, or None. Missing values, None and
    values that are not numbers (``"auto"``, lists: the type checks' business) are skipped; a non-finite float is
    outside every range."""
    for name, rng in ranges.items():
        value = values.get(name)
        if value is None or isinstance(value, (bool, str, list, dict)):
            continue
        if not rng.contains(value):
            return name, value, rng
    return None
