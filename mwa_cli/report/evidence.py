"""The report's evidence: bootstrap intervals, paired differences to the baseline, time to quality and seed
groups, from the runs' files (eval_ranks.json, metrics.jsonl, config.json). build.py places them in the report.

* Intervals come from `mwa_cli.eval.bootstrap` over the test images, on the metrics of the eval's primary
  protocol (`primary_protocol` in eval.json, "instance" when absent; label-level ranks are read from the
  `label_level` entry of eval_ranks.json when the eval names that protocol).
* Time to quality: `mwa_cli.report.quality_time` on each run's validation checks; the target is a share of the
  baseline's best val RSUM.
* Seed groups: runs whose config.json differ only in the seed (and the bookkeeping keys below); with several seeds
  the verdict's interval also holds the seed-to-seed spread (`seed_difference`).
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from mwa_cli.eval.bootstrap import (
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    QueryRanks,
    bootstrap,
    paired_difference,
    paired_group_difference,
    point_metrics,
)
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


def time_to_quality(run: Run, reference_best: float | None, n_devices: int, protocol: str = "instance",
                    floor: float | None = None) -> dict[str, Any]:
    """{"curve": [[minutes, rsum]], "best_val_rsum", "to": {"95": {...} | None, "99": ...}, "checks", "reference",
    "floor", "below_floor": [pcts]} for one run; a target at or below `floor` (the zero-shot val RSUM) is not
    measured (listed in "below_floor")."""
    curve = val_curve(run.eval_rows, protocol)
    out: dict[str, Any] = {"curve": [[p["time_s"] / 60.0, p["rsum"]] for p in curve], "best_val_rsum": best_rsum(curve),
                           "to": {}, "checks": len(curve), "reference": reference_best, "floor": floor,
                           "below_floor": []}
    for pct in TARGETS:
        target = pct / 100.0 * reference_best if reference_best else None
        if target is not None and floor is not None and target <= floor:
            out["below_floor"].append(pct)
            target = None
        hit = time_to(curve, target) if target is not None and curve else None
        out["to"][str(pct)] = None if hit is None else {
            "time_s": hit["time_s"], "step": hit["step"], "val_rsum": hit["rsum"],
            "device_hours": hit["time_s"] * max(1, n_devices) / 3600.0}
    return out


def zero_shot_val(run: Run, protocol: str = "instance") -> float | None:
    """The run's step-0 val RSUM: the backbone before training (every method starts from it)."""
    return next((p["rsum"] for p in val_curve(run.eval_rows, protocol) if p["step"] == 0), None)


def reference_best(run: Run, protocol: str = "instance") -> float | None:
    """The baseline's best trained val RSUM, or None when it never beat its own zero-shot point (step 0): then
    "95 % of it" would be reached by the untrained backbone and time to quality would mean nothing."""
    curve = val_curve(run.eval_rows, protocol)
    best = best_rsum(curve)
    zero = zero_shot_val(run, protocol)
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


def seed_difference(main: list[Run], base: list[Run]) -> dict[str, Any] | None:
    """The RSUM difference of the mean over `main`'s seeds and the mean over `base`'s, with a 95 % interval that
    holds both sources of noise: which test images were drawn (a paired bootstrap of the group means) and which
    seed trained the runs (the pooled between-seed variance of the test RSUM, s²·(1/n_a + 1/n_b)); Student t with
    Welch–Satterthwaite degrees of freedom (docs/decisions.md, "Run-to-run noise"). None unless one of the two
    methods has ≥ 2 seeds and every run has per-query ranks on the same test images."""
    from scipy.stats import t as student_t

    ranks_a, ranks_b = [query_ranks(r) for r in main], [query_ranks(r) for r in base]
    if max(len(main), len(base)) < 2 or any(x is None for x in (*ranks_a, *ranks_b)):
        return None
    try:
        img = paired_group_difference(ranks_a, ranks_b, resamples=DEFAULT_RESAMPLES, seed=DEFAULT_SEED)
    except ValueError:
        return None
    groups = [[point_metrics(q)["rsum"] for q in g] for g in (ranks_a, ranks_b)]
    df_seed = sum(len(g) - 1 for g in groups)
    pooled = sum(sum((v - statistics.fmean(g)) ** 2 for v in g) for g in groups) / df_seed
    var_seed = pooled * (1 / len(main) + 1 / len(base))
    var_img = img["se"]["rsum"] ** 2
    total = var_img + var_seed
    dof = total ** 2 / (var_seed ** 2 / df_seed) if var_seed > 0 else float("inf")
    half = float(student_t.ppf(0.975, dof)) * total ** 0.5 if math.isfinite(dof) else 1.959963984540054 * total ** 0.5
    diff = img["value"]["rsum"]
    return {"value": {"rsum": diff}, "ci95": {"rsum": [diff - half, diff + half]}, "se": {"rsum": total ** 0.5},
            "se_images": var_img ** 0.5, "sd_seeds": pooled ** 0.5, "df": dof, "n_main": len(main),
            "n_baseline": len(base), "n_images": img["n_images"], "method": "images+seeds"}
