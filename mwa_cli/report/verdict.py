"""The verdict sentence: better / worse / not distinguishable from the baseline, from the paired interval of the
RSUM difference (none on a test split below MIN_EVAL_IMAGES images: too small to tell), then time to quality,
money, and the spread over seeds. Pure: report dicts in, text out."""

from __future__ import annotations

from typing import Any

from mwa_cli.eval.bootstrap import images_to_separate
from mwa_cli.eval.small_split import MIN_EVAL_IMAGES
from mwa_cli.report.i18n import fmt_delta, fmt_duration, fmt_money, fmt_num, fmt_pct, is_num, t


def classify(delta_ci: dict[str, Any]) -> str:
    """"better" when the 95 % interval of the RSUM difference lies above 0, "worse" below, else "same"."""
    lo, hi = delta_ci["ci95"]["rsum"]
    return "better" if lo > 0 else "worse" if hi < 0 else "same"


def _cost_text(lang: str, cost_diff: Any, currency: str) -> str:
    if is_num(cost_diff) and cost_diff < 0:
        return t(lang, "verdict_cost", saving=fmt_money(-cost_diff, currency))
    if is_num(cost_diff) and cost_diff > 0:
        return t(lang, "verdict_cost_more", saving=fmt_money(cost_diff, currency))
    return ""


def too_small_sentence(lang: str, m: dict[str, Any], n: int, split: str) -> str:
    """No better/worse below MIN_EVAL_IMAGES test images: say so and how many images it takes."""
    return t(lang, "verdict_too_small", split=split, n=n, method=m["display"],
             diff=fmt_delta((m.get("recall_delta") or {}).get("rsum")), min=MIN_EVAL_IMAGES, more=MIN_EVAL_IMAGES - n)


def quality_sentence(lang: str, m: dict[str, Any], b: dict[str, Any], n_test: int | None = None,
                     split: str = "test") -> str:
    dci = m.get("recall_delta_ci")
    n_small = int(dci["n_images"]) if dci is not None else n_test
    if n_small is not None and n_small < MIN_EVAL_IMAGES:
        return too_small_sentence(lang, m, n_small, split)
    name = str(m.get("protocol_name") or "instance")
    proto = t(lang, f"verdict_protocol_{name}") if name in ("instance", "label_level") else name
    if dci is None:
        return t(lang, "verdict_no_ci", method=m["display"], kept=fmt_pct(m.get("rsum_kept_pct"), 1))
    diff, (lo, hi) = dci["value"]["rsum"], dci["ci95"]["rsum"]
    n = int(dci["n_images"])
    kind = classify(dci)
    common = dict(method=m["display"], n=n, diff=fmt_delta(diff), lo=fmt_delta(lo), hi=fmt_delta(hi), protocol=proto)
    if kind != "same":
        return t(lang, f"verdict_{kind}", **common)
    need = images_to_separate(diff, dci["se"]["rsum"], n)
    sep = (t(lang, "verdict_separate_zero") if need is None
           else t(lang, "verdict_separate", need=f"{need:,}", more=f"{max(0, need - n):,}"))
    return t(lang, "verdict_same", separate=sep, **common)


def time_sentence(lang: str, m: dict[str, Any], b: dict[str, Any], target_pct: int, currency: str) -> str:
    cost = _cost_text(lang, m["roi"]["compute_cost_diff"], currency)
    if m["roi_basis"] == "time_to_quality" and b["roi_basis"] == "time_to_quality":
        hit, bhit = m["time_to_quality"]["to"][str(target_pct)], b["time_to_quality"]["to"][str(target_pct)]
        return t(lang, "verdict_ttq", pct=target_pct, time=fmt_duration(hit["time_s"], lang),
                 tpct=fmt_pct(m["time_pct_of_baseline"], 0), btime=fmt_duration(bhit["time_s"], lang), cost=cost)
    if m["roi_basis"] == "not_reached":
        return t(lang, "verdict_ttq_not", pct=target_pct, time=fmt_duration(m["cost"]["wall_s"], lang), cost=cost)
    return t(lang, "verdict_ttq_none", time=fmt_pct(m["time_pct_of_baseline"], 0), cost=cost)


def seeds_sentence(lang: str, m: dict[str, Any], groups: list[dict[str, Any]], baseline_method: str) -> str:
    mine = next((g for g in groups if g["name"] == m.get("seed_group")), None)
    base = next((g for g in groups if g["method"] == baseline_method), None)
    if mine is None or base is None or not mine["test_rsum"] or not base["test_rsum"]:
        return ""
    return t(lang, "verdict_seeds", n=mine["test_rsum"]["n"], method=m["display"],
             m=fmt_num(mine["test_rsum"]["mean"]), sd=fmt_num(mine["test_rsum"]["sd"]),
             bm=fmt_num(base["test_rsum"]["mean"]), bsd=fmt_num(base["test_rsum"]["sd"]))


def verdict(lang: str, m: dict[str, Any], b: dict[str, Any], *, target_pct: int, currency: str,
            groups: list[dict[str, Any]] | None = None, baseline_method: str = "full-ft",
            n_test: int | None = None, split: str = "test") -> str:
    """The whole verdict for the main run `m` against the baseline `b` (run dicts of the report, with "display");
    `n_test`: the evaluated split's image count, for runs without per-query ranks."""
    return (quality_sentence(lang, m, b, n_test, split) + time_sentence(lang, m, b, target_pct, currency)
            + seeds_sentence(lang, m, groups or [], baseline_method))
