"""Assemble the report: one JSON-ready dict that the terminal tables, the HTML and ``--json`` all show.

Shape (``schema_version`` 1)::

    {"schema_version", "created", "lang", "mwa_version", "compare", "html",
     "baseline": {"run", "method", "found", "estimated", "train_command"},
     "dataset": {"hash", "images", "captions", "split", "n_images", "n_captions", "data_dir"},
     "assumptions": {"gpu_cost_per_hour", "currency", "lines", "retrains_per_year", "backbone_bytes",
                     "backbone_bytes_estimated"},
     "hours_unit": "gpu_hours|cpu_hours|device_hours",
     "runs": [{"name", "path", "method", "backbone", "is_baseline", "is_main",
               "estimated": {"recall", "cost", "savings", "roi"},   # true where the figures are estimates
               "recall": {"i2t": {...}, "t2i": {...}, "rsum", "mean_recall"} | null,
               "recall_delta": {"i2t_r1", ..., "t2i_r10", "rsum", "mean_recall"} | null,   # points vs baseline
               "rsum_kept_pct", "time_pct_of_baseline",   # under the primary protocol; time: to the target quality
               "by_protocol": {"instance"|"label_level": {"recall", "recall_delta", "rsum_kept_pct"}},
               "recall_ci": {"value", "ci95": {"i2t_r1", ..., "rsum": [lo, hi]}, "resamples", "seed", "n_images",
                             "level"} | null,   # bootstrap over test images (evidence.py); null without ranks
               "recall_delta_ci": {"value", "ci95", "se", ...} | null,   # paired, vs the baseline
               "protocol_name": "instance|label_level", "seed", "seed_group": name | null,
               "learning": {"status", "vs_zero_shot", "above_zero_shot", "below_zero_shot", "above_chance",
                            "chance_rsum", "collapse", "schedule"},   # learning.py; docs/formats.md, "Report"
               "time_to_quality": {"curve": [[minutes, val_rsum]], "best_val_rsum", "checks", "reference",
                                   "floor", "below_floor",
                                   "to": {"95": {"time_s", "step", "val_rsum", "device_hours"} | null, "99": ...}},
               "roi_basis": "time_to_quality|not_reached|whole_run" | null,   # null (and roi null): no verdict
               "cost": {"wall_s", "train_s", "device_hours", "hours_unit", "samples_per_s", "peak_mem_gib",
                        "trainable_params", "total_params", "trainable_pct", "artefact_bytes"},
               "savings_pct": {"wall_s", "device_hours", "peak_mem_gib", "artefact_bytes"},  # + = less than baseline
               "roi": {"trainings_per_year", "device_hours_per_year", "compute_cost_per_year", "storage_bytes",
                       "compute_cost_diff", "storage_bytes_diff"},   # diff = this - baseline
               "per_label": {label: {"mean_recall", "rsum", "n_images", "n_captions"}},
               "loss_curve": {"x": "time_min|step", "points": [[x, loss], ...]},
               "provenance": {"device_name", "device_type", "n_devices", "torch", "mwa", "command", "created",
                              "budget_s"},
               "gallery": {...} | null}],
     "references": {"chance": {protocol: {...}}, "zero_shot": {...} | null, "zero_shot_note"},
     "decision": {"kind": "compare|no_verdict", "roi_withheld", "runs_not_learned", "seeds": {...} | null,
                  "single_seed"},
     "verdict": "...", "verdict_estimated": bool, "notes": [...], "skipped": [[path, reason], ...],
     "tunes": [{"page", "runs"}],   # tune.html of the `mwa tune` the runs came from (trials or recommendations)
     "bootstrap": {"resamples", "seed", "level", "unit": "test image"},
     "time_to_quality": {"target_pct", "targets", "reference_best_val_rsum", "reference_run", "zero_shot_val_rsum"},
     "seed_groups": [{"name", "method", "runs", "seeds", "test_rsum": {"mean", "sd", "n"} | null,
                      "best_val_rsum", "to_95_s", "to_99_s", "reached": {"95": k, "99": k}}],
     "protocol": "...", "primary_protocol": "instance|label_level",
     "protocols": {"instance": "<sentence>", "label_level": "<sentence>"}}
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

from mwa_cli import __version__
from mwa_cli.eval.bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED, bootstrap
from mwa_cli.eval.zero_shot import ZeroShot
from mwa_cli.models.sources import random_on_purpose
from mwa_cli.report import evidence, learning, references, tuned
from mwa_cli.report import roi as roi_mod
from mwa_cli.report import verdict as verdict_mod
from mwa_cli.report.collect import Collection, Run, resolve_data_dir
from mwa_cli.report.estimate import full_ft_command
from mwa_cli.report.gallery import DataDir, build_gallery
from mwa_cli.report.i18n import fmt_money, fmt_pct, is_num, t
from mwa_cli.report.protocols import PROTOCOLS, choose_primary_protocol, protocol_sentences, recall_under
from mwa_cli.train.budget import share_text

RECALL_KEYS = [("i2t", "r1"), ("i2t", "r5"), ("i2t", "r10"), ("t2i", "r1"), ("t2i", "r5"), ("t2i", "r10")]
MAIN_METHOD = "mwa"


def _num(x: Any) -> float | None:
    return float(x) if is_num(x) else None


def _device_hours(timing: dict[str, Any]) -> float | None:
    if is_num(timing.get("device_hours")):
        return float(timing["device_hours"])
    if is_num(timing.get("wall_s")):
        return float(timing["wall_s"]) * float(timing.get("n_devices") or 1) / 3600.0
    return None


def _hours_unit(timing: dict[str, Any]) -> str:
    return "gpu_hours" if str(timing.get("device_type", "")).lower() == "cuda" else "cpu_hours"


def _recall(run: Run, protocol: str = "instance") -> dict[str, Any] | None:
    return recall_under(run.eval or {}, protocol)


def _compare_recall(rec: dict[str, Any] | None, b_recall: dict[str, Any] | None, is_base: bool
                    ) -> tuple[dict[str, float] | None, float | None]:
    """(points vs the baseline per recall, RSUM kept in percent) of one run under one protocol."""
    delta = kept = None
    if rec is not None and b_recall is not None and not is_base:
        delta = {f"{d}_{k}": float(rec[d][k]) - float(b_recall[d][k]) for d, k in RECALL_KEYS}
        delta["rsum"] = rec["rsum"] - b_recall["rsum"]
        delta["mean_recall"] = rec["mean_recall"] - b_recall["mean_recall"]
    if rec is not None and b_recall is not None and b_recall["rsum"] > 0:
        kept = 100.0 * rec["rsum"] / b_recall["rsum"]
    return delta, kept


def _loss_curve(run: Run, max_points: int = 200) -> dict[str, Any]:
    rows = [r for r in run.train_rows if is_num(r.get("loss"))]
    use_time = bool(rows) and all(is_num(r.get("time_s")) for r in rows)
    pts = [[(float(r["time_s"]) / 60.0 if use_time else float(r.get("step") or i)), float(r["loss"])]
           for i, r in enumerate(rows)]
    if len(pts) > max_points:
        stride = len(pts) / max_points
        pts = [pts[int(i * stride)] for i in range(max_points)] + [pts[-1]]
    return {"x": "time_min" if use_time else "step", "points": pts}


def _roi_hours(run: Run, ttq: dict[str, Any], target_pct: int) -> tuple[float | None, float | None, str]:
    """(device-hours, wall seconds, basis) of one training for the ROI: the time to the target quality when the
    run reached it; the whole run otherwise ("not_reached": a lower bound; "whole_run": no validation curve)."""
    hit = ttq["to"].get(str(target_pct))
    if hit is not None:
        return hit["device_hours"], hit["time_s"], "time_to_quality"
    measured = ttq["checks"] and ttq["reference"] is not None and target_pct not in ttq.get("below_floor", [])
    basis = "not_reached" if measured else "whole_run"
    return _device_hours(run.timing), _num(run.timing.get("wall_s")), basis


def baseline_method(baseline: Run | None, compare: str) -> str:
    return baseline.method if baseline is not None else compare


def _pick_baseline(runs: list[Run], compare: str) -> tuple[Run | None, list[str]]:
    cands = [r for r in runs if r.method == compare or r.name == compare]
    notes = []
    if len(cands) > 1:
        cands.sort(key=lambda r: str(r.eval.get("created") or ""), reverse=True)
        notes.append(f"{len(cands)} runs match --compare {compare}; the most recently evaluated one, "
                     f"{cands[0].name}, is the baseline")
    return (cands[0] if cands else None), notes


def _pick_main(runs: list[Run], baseline: Run | None) -> Run | None:
    """The run the verdict is about: an mwa run, of the baseline's seed when there is one (never the best of
    several seeds: that would pick the luckiest draw), then the highest RSUM."""
    others = [r for r in runs if r is not baseline and r.method != references.FROZEN]  # frozen: a reference
    if not others:
        return None
    mwa = [r for r in others if r.method == MAIN_METHOD]
    pool = mwa or others
    if baseline is not None:
        pool = [r for r in pool if r.config.get("seed") == baseline.config.get("seed")] or pool
    return max(pool, key=lambda r: (_recall(r) or {}).get("rsum", -1.0))


def open_data_dir(runs: list[Run], override: Path | None = None) -> DataDir | None:
    """The data dir (for dataset size and the gallery): the first run's whose manifest.csv can be found."""
    for r in runs:
        d = resolve_data_dir(r, override)
        if d is not None:
            try:
                return DataDir(d)
            except (OSError, ValueError):
                return None
    return None


def build_report(
    coll: Collection,
    *,
    compare: str = roi_mod.BASELINE_METHOD,
    assumptions: roi_mod.Assumptions | None = None,
    lang: str = "en",
    estimated_baseline: Run | None = None,
    data_dir: Path | None = None,
    estimate_steps: int | None = None,
    data: DataDir | None = None,
    target_pct: int = 95,
    zero_shot: ZeroShot | None = None,
    zero_shot_note: str | None = None,
) -> dict[str, Any]:
    """Build the report dict. ``estimated_baseline`` (from estimate.py) stands in when no baseline run exists;
    ``zero_shot`` (references.zero_shot) is the untrained backbone's evaluation, ``zero_shot_note`` why it is
    missing."""
    a = assumptions or roi_mod.Assumptions()
    runs = list(coll.runs)
    baseline, notes = _pick_baseline(runs, compare)
    notes += [t(lang, "random_weights_note", name=r.name) for r in runs if random_on_purpose(r.config.get("weights"))]
    if baseline is None and estimated_baseline is not None:
        baseline = estimated_baseline
        runs.append(estimated_baseline)
    main = _pick_main(runs, baseline)
    notes += tuned.notes(lang, runs, main, baseline)
    b_est = bool(baseline is not None and (baseline.estimated or baseline.timing.get("estimated")))

    if data is None:
        data = open_data_dir(runs, data_dir)

    # shared backbone size for adapter methods' storage
    backbone_bytes: float | None = None
    backbone_est = False
    if baseline is not None and baseline.artefact_bytes:
        backbone_bytes, backbone_est = float(baseline.artefact_bytes), b_est
    else:
        totals = [r.timing.get("total_params") for r in runs if is_num(r.timing.get("total_params"))]
        if totals:
            backbone_bytes, backbone_est = float(max(totals)) * 4.0, True

    primary = choose_primary_protocol([r.eval or {} for r in runs])
    chance = references.chance([r.eval or {} for r in runs] + ([zero_shot.eval] if zero_shot else []), data,
                               coll.runs[0].split)
    b_recall = _recall(baseline, primary) if baseline is not None else None
    ref_best = evidence.reference_best(baseline, primary) if baseline is not None and not b_est else None
    if baseline is not None and not b_est and ref_best is None and evidence.val_curve(baseline.eval_rows, primary):
        notes.append(t(lang, "ttq_no_gain", run=baseline.name))
    notes += _curve_protocol_notes(runs, primary, lang)
    ttq = _time_to_quality(runs, baseline, compare, ref_best, primary)
    basis = {id(r): _roi_hours(r, ttq[id(r)], target_pct) for r in runs}
    b_hours = basis[id(baseline)][0] if baseline is not None else None
    b_yearly = (roi_mod.yearly(b_hours, baseline.artefact_bytes, is_full_ft=True, backbone_bytes=backbone_bytes,
                               a=a) if baseline is not None else None)
    groups = evidence.seed_groups(runs)
    group_of = {id(r): name for name, g in groups.items() for r in g}

    ordered = ([baseline] if baseline is not None else []) + sorted(
        (r for r in runs if r is not baseline), key=lambda r: (r is not main, r.method, r.name))
    out_runs = []
    for r in ordered:
        tm = r.timing
        est = bool(r.estimated or tm.get("estimated"))
        rec = _recall(r, primary)
        hours = _device_hours(tm)
        trainable, total = _num(tm.get("trainable_params")), _num(tm.get("total_params"))
        is_base = r is baseline
        cost = {
            "wall_s": _num(tm.get("wall_s")), "train_s": _num(tm.get("train_s")), "device_hours": hours,
            "hours_unit": _hours_unit(tm), "samples_per_s": _num(tm.get("samples_per_s")),
            "peak_mem_gib": _num(tm.get("peak_mem_gib")),
            "trainable_params": int(trainable) if trainable is not None else None,
            "total_params": int(total) if total is not None else None,
            "trainable_pct": (100.0 * trainable / total) if trainable is not None and total else None,
            "artefact_bytes": r.artefact_bytes,
        }
        delta, kept = _compare_recall(rec, b_recall, is_base)
        delta_ci = evidence.paired(r, baseline) if delta is not None and not b_est else None
        by_protocol = {}
        for proto in PROTOCOLS:
            p_rec = _recall(r, proto)
            p_delta, p_kept = _compare_recall(p_rec, _recall(baseline, proto) if baseline is not None else None,
                                              is_base)
            by_protocol[proto] = {"recall": p_rec, "recall_delta": p_delta,
                                  "rsum_kept_pct": p_kept if not is_base else (100.0 if p_rec else None)}
        time_pct = None
        r_basis, b_basis = basis[id(r)], basis[id(baseline)] if baseline is not None else (None, None, None)
        if baseline is not None and r_basis[1] and b_basis[1]:
            time_pct = 100.0 * r_basis[1] / b_basis[1]
        roi_hours, roi_basis = r_basis[0], r_basis[2]
        bt = baseline.timing if baseline is not None else {}
        savings = {
            "wall_s": roi_mod.savings_pct(cost["wall_s"], _num(bt.get("wall_s"))),
            "device_hours": roi_mod.savings_pct(hours, _device_hours(bt) if baseline is not None else None),
            "peak_mem_gib": roi_mod.savings_pct(cost["peak_mem_gib"], _num(bt.get("peak_mem_gib"))),
            "artefact_bytes": roi_mod.savings_pct(r.artefact_bytes, baseline.artefact_bytes if baseline else None),
        }
        y = roi_mod.yearly(roi_hours, r.artefact_bytes, is_full_ft=(r.method == roi_mod.BASELINE_METHOD),
                           backbone_bytes=backbone_bytes, a=a)
        y["compute_cost_diff"] = roi_mod.diff(y["compute_cost_per_year"], (b_yearly or {}).get("compute_cost_per_year"))
        y["storage_bytes_diff"] = roi_mod.diff(y["storage_bytes"], (b_yearly or {}).get("storage_bytes"))
        per_label = {}
        label_src = (r.eval.get("label_level") or {}) if primary == "label_level" else r.eval
        for name, pl in (label_src.get("per_label") or {}).items():
            if is_num(pl.get("rsum")):
                per_label[str(name)] = {"mean_recall": float(pl["rsum"]) / 6.0, "rsum": float(pl["rsum"]),
                                        "n_images": pl.get("n_images"), "n_captions": pl.get("n_captions")}
        uses_storage_est = backbone_est and r.method != roi_mod.BASELINE_METHOD
        recall_ci = evidence.intervals(r) if rec is not None else None
        out_runs.append({
            "name": r.name, "path": str(r.path), "method": r.method, "backbone": r.backbone,
            "is_baseline": is_base, "is_main": r is main,
            "estimated": {"recall": False, "cost": est, "savings": est or b_est,
                          "roi": est or b_est or uses_storage_est},
            "recall": rec, "recall_delta": delta, "rsum_kept_pct": kept if not is_base else (100.0 if rec else None),
            "recall_ci": recall_ci, "recall_delta_ci": delta_ci,
            "protocol_name": evidence.primary_protocol(r),
            "learning": learning.assess(r, protocol=primary, zero=zero_shot, chance=chance.get(primary),
                                        ci=recall_ci),
            "time_to_quality": ttq[id(r)], "roi_basis": roi_basis, "seed": r.config.get("seed"),
            "seed_group": group_of.get(id(r)),
            "time_pct_of_baseline": time_pct, "by_protocol": by_protocol,
            "cost": cost, "savings_pct": savings if not is_base else {k: None for k in savings}, "roi": y,
            "per_label": per_label, "loss_curve": _loss_curve(r),
            "provenance": {"device_name": tm.get("device_name"), "device_type": tm.get("device_type"),
                           "n_devices": tm.get("n_devices"), "torch": tm.get("torch"), "mwa": tm.get("mwa"),
                           "command": r.config.get("command"), "created": r.eval.get("created"),
                           "budget_s": tm.get("budget_s"), "eval_numerics": r.eval.get("numerics")},
            "gallery": build_gallery(r, data, primary) if not r.estimated else None,
        })
    notes += [t(lang, "short_run" if x["learning"]["schedule"]["short"] else "shorter_run", name=x["name"],
                **_schedule_words(x["learning"]["schedule"]))
              for x in out_runs if x["learning"]["schedule"]["below_default"] and x["method"] != "frozen"]
    if zero_shot is None and zero_shot_note:
        notes.append(t(lang, "zero_shot_missing", why=zero_shot_note))

    seed_rows = _seed_rows(groups, out_runs)
    units = {x["cost"]["hours_unit"] for x in out_runs}
    hours_unit = units.pop() if len(units) == 1 else "device_hours"

    m_dict = next((x for x in out_runs if x["is_main"]), None)
    b_dict = next((x for x in out_runs if x["is_baseline"]), None)
    stalled = learning.stalled([m_dict, b_dict]) if not b_est else learning.stalled([m_dict])
    seeds = None
    if main is not None and baseline is not None and not b_est:
        seeds = evidence.seed_difference(groups.get(group_of.get(id(main)), [main]),
                                         groups.get(group_of.get(id(baseline)), [baseline]))

    # verdict
    verdict_est = b_est
    if stalled:
        shown = [dict(x, display=_display_method(x)) for x in (m_dict, b_dict) if x is not None]
        verdict = verdict_mod.no_verdict(lang, [x for x in shown if any(x["name"] == y["name"] for y in stalled)],
                                         shown, labels=primary == "label_level")
    elif baseline is None:
        verdict = t(lang, "verdict_none")
    elif main is None:
        verdict = t(lang, "verdict_only_baseline")
    elif b_est or baseline.estimated:
        m = m_dict
        cost_diff = m["roi"]["compute_cost_diff"]
        cost_txt = ""
        if is_num(cost_diff) and cost_diff < 0:
            cost_txt = t(lang, "verdict_cost", saving=fmt_money(-cost_diff, a.currency))
        elif is_num(cost_diff) and cost_diff > 0:
            cost_txt = t(lang, "verdict_cost_more", saving=fmt_money(cost_diff, a.currency))
        verdict = t(lang, "verdict_time_only", method=_display_method(m), time=fmt_pct(m["time_pct_of_baseline"], 0),
                    cost=cost_txt)
    else:
        m = dict(m_dict, display=_display_method(m_dict))
        n_test = coll.runs[0].eval.get("n_images")
        verdict = verdict_mod.verdict(lang, m, b_dict, target_pct=target_pct, currency=a.currency, groups=seed_rows,
                                      baseline_method=compare, n_test=n_test if is_num(n_test) else None,
                                      split=str(coll.runs[0].split or "test"), seeds=seeds)
    if primary == "label_level" and main is not None and baseline is not None:
        verdict += " " + t(lang, "verdict_label_level")
    if stalled:  # nothing learned, so nothing to price: no yearly cost, no time saved (terminal, HTML, --json)
        for x in out_runs:
            x["roi"], x["roi_basis"], x["time_pct_of_baseline"] = None, None, None

    ref = main or (ordered[0] if ordered else None)
    if baseline is not None and b_est:
        notes.insert(0, t(lang, "estimated_note", steps=baseline.timing.get("measured_steps") or estimate_steps or "?",
                          ref=(main.name if main else "?")))

    first = coll.runs[0]
    info = data.info if data is not None else {}
    counts = info.get("counts") or {}
    return {
        "schema_version": 1,
        "created": _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds"),
        "lang": lang,
        "mwa_version": __version__,
        "compare": compare,
        "baseline": {
            "run": baseline.name if baseline is not None else None,
            "method": compare,
            "found": baseline is not None and not b_est,
            "estimated": b_est,
            "train_command": full_ft_command(ref) if (ref is not None and (baseline is None or b_est)) else None,
        },
        "dataset": {
            "hash": coll.dataset_hash, "images": counts.get("images"), "captions": counts.get("captions"),
            "split": first.split, "n_images": first.eval.get("n_images"), "n_captions": first.eval.get("n_captions"),
            "data_dir": str(data.path) if data is not None else first.config.get("data_dir"),
        },
        "assumptions": {**a.as_dict(), "backbone_bytes": backbone_bytes, "backbone_bytes_estimated": backbone_est},
        "hours_unit": hours_unit,
        "runs": out_runs,
        "references": _references(chance, zero_shot, zero_shot_note, runs, primary),
        "verdict": verdict,
        "verdict_estimated": verdict_est,
        "decision": {"kind": "no_verdict" if stalled else "compare", "roi_withheld": bool(stalled),
                     "runs_not_learned": [x["name"] for x in stalled], "seeds": seeds,
                     "single_seed": seeds is None and main is not None and baseline is not None and not b_est},
        "bootstrap": {"resamples": DEFAULT_RESAMPLES, "seed": DEFAULT_SEED, "level": 0.95, "unit": "test image"},
        "time_to_quality": {"target_pct": target_pct, "targets": list(evidence.TARGETS),
                            "reference_best_val_rsum": ref_best,
                            "reference_run": baseline.name if baseline is not None else None,
                            "zero_shot_val_rsum": next(iter({v["floor"] for v in ttq.values()} - {None}), None)},
        "seed_groups": seed_rows,
        "notes": notes,
        "tunes": tuned.pages(runs),  # the `mwa tune` pages these runs came from
        "skipped": [list(s) for s in coll.skipped],
        "protocol": first.eval.get("protocol"),
        "primary_protocol": primary,
        "protocols": protocol_sentences([r.eval or {} for r in runs]),
        "html": None,
    }


def _time_to_quality(runs: list[Run], baseline: Run | None, compare: str, ref_best: float | None,
                     protocol: str) -> dict[int, dict[str, Any]]:
    """Each run's time to quality against the baseline method's run of the same seed when there is one (seed
    groups), never against a target the zero-shot backbone already meets (its step-0 val RSUM)."""
    base_method = baseline_method(baseline, compare)
    ref_by_seed = {x.config.get("seed"): evidence.reference_best(x, protocol)
                   for x in runs if x.method == base_method and not x.estimated}
    floors = [v for v in (evidence.zero_shot_val(x, protocol) for x in ([baseline] if baseline else []) + runs)
              if v is not None]
    floor = floors[0] if floors else None
    out = {}
    for r in runs:
        ref = ref_best if r is baseline else ref_by_seed.get(r.config.get("seed"), ref_best)
        out[id(r)] = evidence.time_to_quality(r, None if r.method == references.FROZEN else ref,
                                              int(r.timing.get("n_devices") or 1), protocol, floor)
    return out


def _curve_protocol_notes(runs: list[Run], protocol: str, lang: str) -> list[str]:
    """Runs whose val checks were logged under another protocol (older mwa): left out of time to quality."""
    old = [r.name for r in runs if evidence.val_curve(r.eval_rows) and not evidence.val_curve(r.eval_rows, protocol)
           and protocol != "instance"]
    return [t(lang, "curve_other_protocol", runs=", ".join(old))] if old else []


def _schedule_words(sched: dict[str, Any]) -> dict[str, str]:
    return {"steps": f"{sched['steps']:,}", "pct": share_text(sched["share_pct"]),
            "default": f"{sched['default_steps']:,}"}


def _seed_rows(groups: dict[str, list[Run]], out_runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seed_rows = []
    for gname, g in groups.items():
        rows = [x for x in out_runs if x["seed_group"] == gname]
        seed_rows.append({
            "name": gname, "method": g[0].method, "runs": [x["name"] for x in rows],
            "seeds": sorted(x["seed"] for x in rows if x["seed"] is not None),
            "test_rsum": evidence.spread([(x["recall"] or {}).get("rsum") for x in rows]),
            "best_val_rsum": evidence.spread([x["time_to_quality"]["best_val_rsum"] for x in rows]),
            **{f"to_{p}_s": evidence.spread([(x["time_to_quality"]["to"].get(str(p)) or {}).get("time_s")
                                             for x in rows]) for p in evidence.TARGETS},
            "reached": {str(p): sum(1 for x in rows if x["time_to_quality"]["to"].get(str(p)))
                        for p in evidence.TARGETS},
        })
    return seed_rows


def _references(chance: dict[str, Any], zero: ZeroShot | None, note: str | None, runs: list[Run],
                primary: str) -> dict[str, Any]:
    """The report's `references`: chance per protocol, and the zero-shot backbone (None, with the note why)."""
    entry = None
    if zero is not None:
        ranks = learning.zero_shot_ranks(zero, primary)
        run_name = zero.path.name if zero.source == "run" and zero.path is not None else None
        entry = {"source": zero.source, "path": str(zero.path) if zero.path else None, "run": run_name,
                 "backbone": zero.eval.get("backbone"),
                 "shown_as_run": run_name is not None and any(r.name == run_name for r in runs),
                 "by_protocol": {p: recall_under(zero.eval, p) for p in PROTOCOLS},
                 "recall_ci": bootstrap(ranks, resamples=DEFAULT_RESAMPLES, seed=DEFAULT_SEED) if ranks else None}
    return {"chance": chance, "zero_shot": entry, "zero_shot_note": None if zero is not None else note}


def _display_method(run_dict: dict[str, Any]) -> str:
    from mwa_cli.adapters.registry import display_name as method_display_name  # torch-free

    return method_display_name(run_dict["method"])


def display_name(run_dict: dict[str, Any]) -> str:
    """"MWA (runs/mwa-2h)" style label: method name, and the run name when it says more."""
    m = _display_method(run_dict)
    return m if run_dict["name"].lower() in (run_dict["method"].lower(), m.lower()) else f"{m} · {run_dict['name']}"
