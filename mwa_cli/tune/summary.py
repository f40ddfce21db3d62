"""The tune's picture in text: one row per trial (configuration, best val RSUM, time to the target, a sparkline
of its val curve on a time axis shared by every trial), the chosen one marked; `mwa tune` draws it as a table
that fits 80 columns."""

from __future__ import annotations

from mwa_cli.tune.records import TrialRecord
from mwa_cli.tune.rule import Recommendation

BARS = "▁▂▃▄▅▆▇█"
STATE_WORDS = {"complete": "done", "pruned": "pruned", "failed": "failed", "running": "stopped"}


def clock(seconds: float | None) -> str:
    """'1:05' (minutes:seconds), '1:02:05' past an hour, '–' for none."""
    if seconds is None:
        return "–"
    s = max(0, int(round(seconds)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def sparkline(curve: list[tuple[float, float]], t_max: float, lo: float, hi: float, width: int = 8) -> str:
    """The best val RSUM reached by the end of each of `width` equal slices of [0, t_max] (blank before the
    first check, nothing after the trial's last one), scaled from `lo` to `hi`."""
    if t_max <= 0 or not curve:
        return " " * width
    out, best, i = [], None, 0
    end = curve[-1][0]
    for k in range(width):
        edge = t_max * (k + 1) / width
        while i < len(curve) and curve[i][0] <= edge:
            best = curve[i][1] if best is None else max(best, curve[i][1])
            i += 1
        if best is None or edge - t_max / width >= end:
            out.append(" ")
            continue
        level = 0 if hi <= lo else round((best - lo) / (hi - lo) * (len(BARS) - 1))
        out.append(BARS[max(0, min(len(BARS) - 1, level))])
    return "".join(out)


def rows(records: list[TrialRecord], rec: Recommendation, width: int = 8) -> list[dict[str, str]]:
    """Table rows (strings): mark (→ chosen, * best), trial, state, config, best val, time to target, wall time,
    curve."""
    from mwa_cli.tune.space import describe

    curves = [r.curve for r in records if r.curve]
    t_max = max((c[-1][0] for c in curves), default=0.0)
    values = [v for c in curves for _, v in c] + [r.zero_shot for r in records if r.zero_shot is not None]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    out = []
    for r in records:
        mark = "→" if r is rec.chosen else ("*" if r is rec.best else "")
        out.append({"mark": mark, "trial": r.name, "state": STATE_WORDS.get(r.state, r.state),
                    "config": describe(r.params), "best": "–" if r.best is None else f"{r.best:.1f}",
                    "to_target": clock(r.time_to(rec.target)) if rec.target is not None and r.curve else "–",
                    "wall": clock(r.wall_s), "curve": sparkline(r.curve, t_max, lo, hi, width)})
    return out
