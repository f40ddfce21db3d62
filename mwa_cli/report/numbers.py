"""Numbers as the report shows them, one way for the terminal, the HTML page and the verdict.

`is_num` says whether a value read from a run's files is a number to show (finite, not a bool); each ``fmt_*``
formats one kind of figure, and writes ``na`` ("—") for anything else.
"""

from __future__ import annotations

import math
from typing import Any


def is_num(x: Any) -> bool:
    """A finite int or float (a bool, None, NaN or a text is no figure)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def fmt_num(x: Any, digits: int = 1, na: str = "—") -> str:
    return f"{x:,.{digits}f}" if is_num(x) else na


def fmt_pct(x: Any, digits: int = 1, na: str = "—", signed: bool = False) -> str:
    if not is_num(x):
        return na
    return f"{x:+.{digits}f} %" if signed else f"{x:.{digits}f} %"


def fmt_delta(x: Any, digits: int = 1, na: str = "—") -> str:
    return f"{x:+.{digits}f}" if is_num(x) else na


def fmt_int(x: Any, na: str = "—") -> str:
    return f"{int(x):,}" if is_num(x) else na


def fmt_count(x: Any, na: str = "—") -> str:
    """Parameter counts: 86.5 M, 1.2 B, 12.3 k."""
    if not is_num(x):
        return na
    for div, suf in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.1f} {suf}"
    return f"{int(x)}"


def fmt_bytes(x: Any, na: str = "—", signed: bool = False) -> str:
    if not is_num(x):
        return na
    sign = ("+" if x > 0 else "-" if x < 0 else "") if signed else ("-" if x < 0 else "")
    v = abs(float(x))
    for div, suf in ((1024**4, "TiB"), (1024**3, "GiB"), (1024**2, "MiB"), (1024, "KiB")):
        if v >= div:
            return f"{sign}{v / div:.1f} {suf}"
    return f"{sign}{int(v)} B"


def fmt_duration(seconds: Any, lang: str = "en", na: str = "—") -> str:
    if not is_num(seconds):
        return na
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    if lang == "ja":
        if h:
            return f"{h}時間{m:02d}分"
        return f"{m}分{sec:02d}秒" if m else f"{sec}秒"
    if h:
        return f"{h} h {m:02d} min"
    return f"{m} min {sec:02d} s" if m else f"{sec} s"


def fmt_money(x: Any, currency: str, na: str = "—", signed: bool = False) -> str:
    if not is_num(x):
        return na
    digits = 0 if abs(x) >= 100 else 2
    sign = ("+" if x > 0 else "-" if x < 0 else "") if signed else ("-" if x < 0 else "")
    return f"{sign}{abs(x):,.{digits}f} {currency}"
