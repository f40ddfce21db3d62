"""Did a run learn anything? Checked before any comparison (docs/decisions.md, "Runs that did not learn").

A trained run is "did not learn" when its primary-protocol RSUM is not above the zero-shot backbone's (the lower end
of the paired 95 % interval of the difference is not above 0; the point values when a run has no per-query ranks)
or not above chance (the lower end of its own interval, or its point value, not above the chance RSUM); it is
"collapsed" when its label-level recall shows one label standing in for all (`train.collapse.recall_collapse`).
Either one in the main run or the baseline stops the verdict: the report then says what happened and what to do,
and prices nothing. Each run's steps are set against the default schedule for its data (`train.budget`).
"""

from __future__ import annotations

from typing import Any

from mwa_cli.eval.bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED, QueryRanks, paired_difference
from mwa_cli.eval.zero_shot import ZeroShot
from mwa_cli.report import evidence
from mwa_cli.report.collect import Run
from mwa_cli.report.numbers import is_num
from mwa_cli.report.protocols import recall_under
from mwa_cli.train.budget import SHORT_SCHEDULE, default_schedule_of
from mwa_cli.train.collapse import recall_collapse

NOT_LEARNED = ("did_not_learn", "collapsed")


def zero_shot_ranks(zero: ZeroShot | None, protocol: str) -> QueryRanks | None:
    if zero is None or zero.ranks is None:
        return None
    return zero.ranks.label_level if protocol == "label_level" else zero.ranks


def _vs_zero_shot(run: Run, zero: ZeroShot | None, protocol: str) -> dict[str, Any] | None:
    """{"diff", "ci95"} of the run's RSUM minus the zero-shot RSUM: paired over the test images when both have
    per-query ranks, else the point difference (ci95 None)."""
    rec, zrec = recall_under(run.eval, protocol), recall_under(zero.eval, protocol) if zero is not None else None
    if rec is None or zrec is None:
        return None
    a, b = evidence.query_ranks(run), zero_shot_ranks(zero, protocol)
    if a is not None and b is not None:
        try:
            d = paired_difference(a, b, resamples=DEFAULT_RESAMPLES, seed=DEFAULT_SEED)
            return {"diff": d["value"]["rsum"], "ci95": d["ci95"]["rsum"], "zero_shot_rsum": zrec["rsum"]}
        except ValueError:  # other test images (another split or data dir)
            pass
    return {"diff": rec["rsum"] - zrec["rsum"], "ci95": None, "zero_shot_rsum": zrec["rsum"]}


def _above_chance(rec: dict[str, Any] | None, ci: dict[str, Any] | None, chance: dict[str, Any] | None) -> bool | None:
    if rec is None or not chance:
        return None
    low = (ci or {}).get("ci95", {}).get("rsum", [None])[0] if ci else None
    return (low if is_num(low) else rec["rsum"]) > float(chance["rsum"])


def schedule(run: Run) -> dict[str, Any]:
    """{"steps", "default_steps", "default_how", "share_pct", "short"} of a run (short: below SHORT_SCHEDULE)."""
    steps = run.timing.get("steps")
    default = default_schedule_of(run.config)
    out = {"steps": steps if is_num(steps) else None, "default_steps": default[0] if default else None,
           "default_how": default[1] if default else None, "share_pct": None, "short": False, "below_default": False}
    if default and is_num(steps) and default[0] > 0:
        out["share_pct"] = 100.0 * steps / default[0]
        out["below_default"] = steps < default[0]
        out["short"] = steps < SHORT_SCHEDULE * default[0]
    return out


def assess(run: Run, *, protocol: str, zero: ZeroShot | None, chance: dict[str, Any] | None,
           ci: dict[str, Any] | None) -> dict[str, Any]:
    """The `learning` entry of a run in the report (see the module docstring); `ci` the run's own intervals."""
    out: dict[str, Any] = {"status": "reference" if run.method == "frozen" else "estimated" if run.estimated
                           else "unknown", "vs_zero_shot": None, "above_zero_shot": None, "below_zero_shot": None,
                           "above_chance": None, "chance_rsum": chance.get("rsum") if chance else None,
                           "collapse": None, "schedule": schedule(run)}
    if out["status"] != "unknown":
        return out
    rec = recall_under(run.eval, protocol)
    vs = _vs_zero_shot(run, zero, protocol)
    if vs is not None:
        out["vs_zero_shot"] = vs
        out["above_zero_shot"] = (vs["ci95"][0] if vs["ci95"] else vs["diff"]) > 0
        out["below_zero_shot"] = vs["diff"] < 0
    out["above_chance"] = _above_chance(rec, ci, chance)
    if protocol == "label_level" and isinstance(run.eval.get("label_level"), dict):
        out["collapse"] = recall_collapse(run.eval["label_level"])
    if out["collapse"] is not None:
        out["status"] = "collapsed"
    elif out["above_zero_shot"] is False or out["above_chance"] is False:
        out["status"] = "did_not_learn"
    elif out["above_zero_shot"] or out["above_chance"]:
        out["status"] = "learned"
    return out


def stalled(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The report's run dicts among `runs` (the main run, the baseline) that did not learn."""
    return [r for r in runs if r is not None and r["learning"]["status"] in NOT_LEARNED]
