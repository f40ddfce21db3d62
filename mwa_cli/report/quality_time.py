"""Time to quality: when a run's validation RSUM first reached a target, from the checks in its metrics.jsonl.

Protocol (docs/decisions.md): every method trains under the same warm-up/stable/decay schedule, so at any check
during the stable phase the learning rate does not depend on how long the run was planned to be; the clock is the
run's wall time *without* its validation checks (`time_no_val_s`: start-up, warm-up, compilation, training and
checkpoints count; the checks do not, so checking more often never makes a method look slower). The target is a
share of the baseline's best validation RSUM. Only trained checks count (step > 0): the zero-shot point at step 0
is drawn on the curve but is neither a reference nor a hit, so a baseline that never beat the backbone cannot make
"95 % of it" come for free; nor is a target at or below that zero-shot value (the untrained backbone already meets
it). A run that never reached the target says so (None), never a guess. Every figure is the run's primary protocol
(the checks logged under another one, by an older mwa, are left out).
"""

from __future__ import annotations

from typing import Any, Iterable


def val_curve(rows: Iterable[dict[str, Any]], protocol: str | None = None) -> list[dict[str, float]]:
    """[{"time_s", "step", "rsum"}] of the val checks in time order (time without validation where recorded);
    `protocol`: only the checks logged under it (rows without "protocol", from older mwa, are instance level)."""
    out = []
    for r in rows:
        if r.get("kind") != "eval" or r.get("split") != "val" or r.get("rsum") is None:
            continue
        if protocol is not None and r.get("protocol", "instance") != protocol:
            continue
        t = r.get("time_no_val_s", r.get("time_s"))
        if t is None:
            continue
        out.append({"time_s": float(t), "step": int(r.get("step") or 0), "rsum": float(r["rsum"])})
    out.sort(key=lambda p: (p["time_s"], p["step"]))
    return out


def best_rsum(curve: list[dict[str, float]]) -> float | None:
    """The best val RSUM of the trained checks (step > 0); None without one."""
    return max((p["rsum"] for p in curve if p["step"] > 0), default=None)


def time_to(curve: list[dict[str, float]], target: float) -> dict[str, float] | None:
    """The first check at or above `target`: {"time_s", "step", "rsum"}; None when never reached."""
    for p in curve:
        if p["step"] > 0 and p["rsum"] >= target:
            return dict(p)
    return None


def simulate_patience(curve: list[dict[str, float]], patience: int, min_gap_s: float = 0.0,
                      not_before: float = 0.0) -> dict[str, Any]:
    """Replay early stopping on a recorded curve: checks at least `min_gap_s` apart (the cost-aware interval),
    stop after `patience` checks without a strictly higher RSUM, never before the share `not_before` of the run's
    steps (the trainer's MIN_STOP_FRACTION). Returns the stop time, the best RSUM kept and the time of the whole
    curve, to choose the default patience from measured runs."""
    checks, last = [], None
    for i, p in enumerate(curve):  # the last point is the final evaluation, which every run makes
        if last is None or p["time_s"] - last >= min_gap_s or i == len(curve) - 1:
            checks.append(p)
            last = p["time_s"]
    best, since, stop, stopped = None, 0, checks[-1] if checks else None, False
    for p in checks:
        if best is None or p["rsum"] > best["rsum"]:
            best, since = p, 0
        else:
            since += 1
            if patience > 0 and since >= patience and p is not checks[-1] and \
                    p["step"] >= not_before * curve[-1]["step"]:
                stop, stopped = p, True
                break
    return {"stopped": stopped, "stop_time_s": stop["time_s"] if stop else None,
            "best_rsum": best["rsum"] if best else None, "full_time_s": curve[-1]["time_s"] if curve else None,
            "full_best_rsum": best_rsum(curve)}
