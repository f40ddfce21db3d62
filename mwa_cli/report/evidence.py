"""The report's evidence: bootstrap intervals, paired differences to the baseline, time to quality and seed
groups, from the runs' files (eval_ranks.json, metrics.jsonl, config.json). build.py places them in the report.

* Intervals come from `mwa_cli.eval.bootstrap` over the test images, on the metrics of the eval's primary
  protocol (`primary_protocol` in eval.json, "instance" when absent; label-level ranks are read from the
  `label_level` entry of eval_ranks.json when the eval names that protocol).
* Time to quality: `mwa_cli.report.quality_time` on each run's validation checks; the target is a share of the
  baseline's best val RSUM.
* Seed groups: runs whose config.json differ only in the seed (and the bookkeeping keys below).
"""

from __future__ import annotations

import statistics
from typing import Any

from mwa_cli.eval.bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED, QueryRanks, bootstrap, paired_difference
from mwa_cli.report.collect import Run
from mwa_cli.report.quality_time import best_rsum, time_to, val_curve

TARGETS = (95, 99)  # shares of the baseline's best val RSUM shown in the time-to-quality table
# config.json keys that differ between runs of one setting: never part of the seed-group key
_NOT_SETTING = {"seed", "name", "out", "command", "resume", "plan", "mwa_version", "created", "backbone_info",
                "auto_resolved", "distributed", "devices", "workers"}


def primary_protocol(run: Run) -> str:
    return str(run.eval.get("primary_protocol") or "instance")


def query_ranks(run: Run) -> QueryRanks | None:
    """The per-query ranks of the run's primary protocol on its evaluated split, or None (no file, other split)."""
    if run.ranks is None:
        return None
    split, ranks = run.ranks
    if split != run.split:
        return None
    if primary_protocol(run) == "label_level":
        return getattr(ranks, "label_level", None)  # only when the ranks file carries the label-level queries
    return ranks


def intervals(run: Run) -> dict[str, Any] | None:
    qr = query_ranks(run)
    return bootstrap(qr, resamples=DEFAULT_RESAMPLES, seed=DEFAULT_SEED) if qr is not None else None


def paired(run: Run, baseline: Run) -> dict[str, Any] | None:
    a, b = query_ranks(run), query_ranks(baseline)
    if a is None or b is None or primary_protocol(run) != primary_protocol(baseline):
        return None
    try:
        return paired_difference(a, b, resamples=DEFAULT_RESAMPLES, seed=DEFAULT_SEED)
    except ValueError:  # not the same test images (another data dir or split): no paired interval
        return None


def time_to_quality(run: Run, reference_best: float | None, n_devices: int) -> dict[str, Any]:
    """{"curve": [[minutes, rsum]], "best_val_rsum", "to": {"95": {...} | None, "99": ...}} for one run."""
    curve = val_curve(run.eval_rows)
    out: dict[str, Any] = {"curve": [[p["time_s"] / 60.0, p["rsum"]] for p in curve], "best_val_rsum": best_rsum(curve),
                           "to": {}, "checks": len(curve), "reference": reference_best}
    for pct in TARGETS:
        hit = time_to(curve, pct / 100.0 * reference_best) if reference_best and curve else None
        out["to"][str(pct)] = None if hit is None else {
            "time_s": hit["time_s"], "step": hit["step"], "val_rsum": hit["rsum"],
            "device_hours": hit["time_s"] * max(1, n_devices) / 3600.0}
    return out


def reference_best(run: Run) -> float | None:
    """The baseline's best trained val RSUM, or None when it never beat its own zero-shot point (step 0): then
    "95 % of it" would be reached by the untrained backbone and time to quality would mean nothing."""
    curve = val_curve(run.eval_rows)
    best = best_rsum(curve)
    zero = next((p["rsum"] for p in curve if p["step"] == 0), None)
    return None if best is None or (zero is not None and best <= zero) else best


def _setting(run: Run) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in run.config.items() if k not in _NOT_SETTING))


def seed_groups(runs: list[Run]) -> dict[str, list[Run]]:
    """Runs of one setting that differ only by --seed, keyed by their first run's name (groups of ≥ 2 only)."""
    groups: dict[tuple, list[Run]] = {}
    for r in runs:
        if not r.estimated:
            groups.setdefault(_setting(r), []).append(r)
    return {g[0].name: g for g in groups.values() if len({x.config.get("seed") for x in g}) >= 2}


def spread(values: list[float]) -> dict[str, Any] | None:
    """Mean and sample standard deviation over seeds (None when fewer than two values)."""
    vals = [float(v) for v in values if v is not None]
    if len(vals) < 2:
        return None
    return {"mean": statistics.fmean(vals), "sd": statistics.stdev(vals), "n": len(vals)}
