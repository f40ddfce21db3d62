"""The verdict sentence: better / worse / not distinguishable from the baseline, from the paired interval of the
RSUM difference (none on a test split below MIN_EVAL_IMAGES images: too small to tell), then time to quality,
money, and the spread over seeds. With several seeds the interval holds the seed-to-seed spread too; with one run
per method the sentence says that it cannot tell training noise from a difference. Runs that did not learn get
no comparison at all (`no_verdict`): what happened and what to do. Pure: report dicts in, text out."""

from __future__ import annotations

from typing import Any

from mwa_cli.eval.bootstrap import images_to_separate
from mwa_cli.eval.small_split import MIN_EVAL_IMAGES
from mwa_cli.report.i18n import t
from mwa_cli.report.numbers import fmt_delta, fmt_duration, fmt_money, fmt_num, fmt_pct, is_num


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


def _protocol_words(lang: str, m: dict[str, Any]) -> str:
    name = str(m.get("protocol_name") or "instance")
    return t(lang, f"verdict_protocol_{name}") if name in ("instance", "label_level") else name


def quality_sentence(lang: str, m: dict[str, Any], b: dict[str, Any], n_test: int | None = None,
                     split: str = "test", seeds: dict[str, Any] | None = None) -> str:
    dci = m.get("recall_delta_ci")
    n_small = int(dci["n_images"]) if dci is not None else n_test
    if n_small is not None and n_small < MIN_EVAL_IMAGES:
        return too_small_sentence(lang, m, n_small, split)
    if dci is None:
        return t(lang, "verdict_no_ci", method=m["display"], kept=fmt_pct(m.get("rsum_kept_pct"), 1))
    proto = _protocol_words(lang, m)
    if seeds is not None:  # the interval holds the test images drawn and the seeds
        diff, (lo, hi) = seeds["value"]["rsum"], seeds["ci95"]["rsum"]
        return t(lang, f"verdict_seeds_{classify(seeds)}", method=m["display"], n=int(seeds["n_images"]),
                 na=seeds["n_main"], nb=seeds["n_baseline"], diff=fmt_delta(diff), lo=fmt_delta(lo), hi=fmt_delta(hi),
                 protocol=proto)
    diff, (lo, hi) = dci["value"]["rsum"], dci["ci95"]["rsum"]
    n = int(dci["n_images"])
    kind = classify(dci)
    common = dict(method=m["display"], n=n, diff=fmt_delta(diff), lo=fmt_delta(lo), hi=fmt_delta(hi), protocol=proto)
    if kind != "same":
        return t(lang, "verdict_one_run", **common)
    need = images_to_separate(diff, dci["se"]["rsum"], n)
    sep = (t(lang, "verdict_separate_zero") if need is None
           else t(lang, "verdict_separate", need=f"{need:,}", more=f"{max(0, need - n):,}"))
    return t(lang, "verdict_same", separate=sep, **common) + t(lang, "verdict_one_run_noise")


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
            n_test: int | None = None, split: str = "test", seeds: dict[str, Any] | None = None) -> str:
    """The whole verdict for the main run `m` against the baseline `b` (run dicts of the report, with "display");
    `n_test`: the evaluated split's image count, for runs without per-query ranks; `seeds`: the seed-aware
    difference (`evidence.seed_difference`), when one of the methods has several seeds."""
    return (quality_sentence(lang, m, b, n_test, split, seeds) + time_sentence(lang, m, b, target_pct, currency)
            + seeds_sentence(lang, m, groups or [], baseline_method))


def _why(lang: str, r: dict[str, Any]) -> list[str]:
    """What is wrong with one run that did not learn, in the report's words."""
    ln, rec = r["learning"], r.get("recall") or {}
    parts = []
    col = ln.get("collapse")
    if col and col["kind"] == "zero_recall":
        parts.append(t(lang, "why_collapse_zero", labels=", ".join(col["labels"]) or "—",
                       zero=", ".join(col["zero_labels"])))
    elif col:
        parts.append(t(lang, "why_collapse_answer", share=fmt_num(col["share"], 0), label=col["label"],
                       direction=t(lang, f"direction_{col['direction']}")))
    vs = ln.get("vs_zero_shot")
    if vs is not None and not ln.get("above_zero_shot"):
        interval = (t(lang, "why_interval", lo=fmt_delta(vs["ci95"][0]), hi=fmt_delta(vs["ci95"][1]))
                    if vs["ci95"] else "")
        key = "why_below_zero_shot" if ln.get("below_zero_shot") else "why_not_above_zero_shot"
        parts.append(t(lang, key, rsum=fmt_num(rec.get("rsum")), zero=fmt_num(vs["zero_shot_rsum"]),
                       diff=fmt_delta(vs["diff"]), interval=interval))
    if ln.get("above_chance") is False:
        parts.append(t(lang, "why_not_above_chance", rsum=fmt_num(rec.get("rsum")), chance=fmt_num(ln["chance_rsum"])))
    return parts


def _advice(lang: str, stalled: list[dict[str, Any]], compared: list[dict[str, Any]], labels: bool) -> str:
    """What to do: train longer (the default schedule against the steps these runs had), check the label texts,
    a larger backbone or image size."""
    items = []
    scheds = [(r, r["learning"]["schedule"]) for r in compared]
    default = next((sc["default_steps"] for _, sc in scheds if sc.get("default_steps")), None)
    had = t(lang, "and").join(f"{sc['steps']:,} ({r['display']})" for r, sc in scheds if sc.get("steps") is not None)
    if any(sc.get("below_default") for _, sc in scheds):
        items.append(t(lang, "advice_longer", default=f"{default:,}", had=had))
    elif default is not None:
        items.append(t(lang, "advice_lr"))
    else:  # runs of an older mwa: the default schedule for their data is not known
        items.append(t(lang, "advice_longer_unknown", had=had or "?"))
    if labels:
        items.append(t(lang, "advice_labels"))
    items.append(t(lang, "advice_backbone"))
    return t(lang, "advice_head") + t(lang, "list_sep").join(items) + t(lang, "sentence_end")


def no_verdict(lang: str, stalled: list[dict[str, Any]], compared: list[dict[str, Any] | None],
               labels: bool = False) -> str:
    """The verdict when the main run or the baseline did not learn: which, why, and what to do; no comparison,
    no money (run dicts of the report, with "display")."""
    shown = [r for r in compared if r is not None]
    runs = " ".join(t(lang, "stalled_run", name=r["display"], why=t(lang, "list_sep").join(_why(lang, r)))
                    for r in stalled)
    return f"{t(lang, 'no_verdict_head')} {runs} {_advice(lang, stalled, shown, labels)}"
