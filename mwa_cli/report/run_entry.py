"""One run's entry in the report (model.RunEntry): its recall and the differences from the baseline, cost,
savings, yearly ROI, per-label recall, loss curve, provenance and gallery."""

from __future__ import annotations

from typing import Any, Literal, cast

from mwa_cli.report import evidence, learning
from mwa_cli.report import roi as roi_mod
from mwa_cli.report.choice import Choice
from mwa_cli.report.collect import Run
from mwa_cli.report.comparison import Comparison, device_hours, num
from mwa_cli.report.gallery import build_gallery
from mwa_cli.report.model import (
    Cost,
    EstimatedFlags,
    HoursUnit,
    LabelFigures,
    LossCurve,
    ProtocolFigures,
    Provenance,
    Recall,
    RecallDelta,
    RunEntry,
    RunROI,
    Savings,
)
from mwa_cli.report.numbers import is_num
from mwa_cli.report.protocols import PROTOCOLS, recall_under

RECALL_KEYS: list[tuple[Literal["i2t", "t2i"], str]] = [("i2t", "r1"), ("i2t", "r5"), ("i2t", "r10"),
                                                        ("t2i", "r1"), ("t2i", "r5"), ("t2i", "r10")]


def ordered_runs(choice: Choice) -> list[Run]:
    """The baseline first, then the main run, then the others by method and name."""
    rest = sorted((r for r in choice.runs if r is not choice.baseline),
                  key=lambda r: (r is not choice.main, r.method, r.name))
    return ([choice.baseline] if choice.baseline is not None else []) + rest


def run_entry(r: Run, cmp: Comparison) -> RunEntry:
    baseline, is_base = cmp.baseline, r is cmp.baseline
    est = bool(r.estimated or r.timing.get("estimated"))
    rec = _recall(r, cmp.primary)
    delta, kept = _compare_recall(rec, _recall(baseline, cmp.primary) if baseline is not None else None, is_base)
    recall_ci = evidence.intervals(r) if rec is not None else None
    cost = _cost(r)
    uses_storage_est = cmp.storage.estimated and r.method != roi_mod.BASELINE_METHOD
    return {
        "name": r.name, "path": str(r.path), "method": r.method, "backbone": r.backbone,
        "is_baseline": is_base, "is_main": r is cmp.choice.main,
        "estimated": EstimatedFlags(recall=False, cost=est, savings=est or cmp.baseline_estimated,
                                    roi=est or cmp.baseline_estimated or uses_storage_est),
        "recall": rec, "recall_delta": delta, "rsum_kept_pct": kept if not is_base else (100.0 if rec else None),
        "recall_ci": recall_ci,
        "recall_delta_ci": (evidence.paired(r, baseline)
                            if baseline is not None and delta is not None and not cmp.baseline_estimated else None),
        "protocol_name": evidence.primary_protocol(r),  # type: ignore[typeddict-item]
        "learning": learning.assess(r, protocol=cmp.primary, zero=cmp.zero_shot, chance=cmp.chance.get(cmp.primary),
                                    ci=recall_ci),
        "time_to_quality": cmp.ttq[id(r)], "roi_basis": cmp.roi_hours[id(r)].basis,  # type: ignore[typeddict-item]
        "seed": r.config.get("seed"), "seed_group": cmp.group_of.get(id(r)),
        "time_pct_of_baseline": _time_pct(r, cmp), "by_protocol": _by_protocol(r, baseline),
        "cost": cost, "savings_pct": _savings(r, cost, baseline), "roi": _yearly(r, cmp),
        "per_label": _per_label(r, cmp.primary), "loss_curve": _loss_curve(r), "provenance": _provenance(r),
        "gallery": build_gallery(r, cmp.data, cmp.primary) if not r.estimated else None,
    }


def _hours_unit(timing: dict[str, Any]) -> HoursUnit:
    return "gpu_hours" if str(timing.get("device_type", "")).lower() == "cuda" else "cpu_hours"


def _recall(run: Run, protocol: str = "instance") -> Recall | None:
    return recall_under(run.eval or {}, protocol)  # type: ignore[return-value]  # protocols.py's plain dict


def _compare_recall(rec: Recall | None, b_recall: Recall | None, is_base: bool
                    ) -> tuple[RecallDelta | None, float | None]:
    """(points vs the baseline per recall, RSUM kept in percent) of one run under one protocol."""
    delta = kept = None
    if rec is not None and b_recall is not None and not is_base:
        points = {f"{d}_{k}": float(rec[d][k]) - float(b_recall[d][k]) for d, k in RECALL_KEYS}
        delta = cast(RecallDelta, {**points, "rsum": rec["rsum"] - b_recall["rsum"],
                                   "mean_recall": rec["mean_recall"] - b_recall["mean_recall"]})
    if rec is not None and b_recall is not None and b_recall["rsum"] > 0:
        kept = 100.0 * rec["rsum"] / b_recall["rsum"]
    return delta, kept


def _by_protocol(r: Run, baseline: Run | None) -> dict[str, ProtocolFigures]:
    out: dict[str, ProtocolFigures] = {}
    for proto in PROTOCOLS:
        rec = _recall(r, proto)
        delta, kept = _compare_recall(rec, _recall(baseline, proto) if baseline is not None else None,
                                      r is baseline)
        out[proto] = {"recall": rec, "recall_delta": delta,
                      "rsum_kept_pct": kept if r is not baseline else (100.0 if rec else None)}
    return out


def _cost(r: Run) -> Cost:
    tm = r.timing
    trainable, total = num(tm.get("trainable_params")), num(tm.get("total_params"))
    return {
        "wall_s": num(tm.get("wall_s")), "train_s": num(tm.get("train_s")), "device_hours": device_hours(tm),
        "hours_unit": _hours_unit(tm), "samples_per_s": num(tm.get("samples_per_s")),
        "peak_mem_gib": num(tm.get("peak_mem_gib")),
        "trainable_params": int(trainable) if trainable is not None else None,
        "total_params": int(total) if total is not None else None,
        "trainable_pct": (100.0 * trainable / total) if trainable is not None and total else None,
        "artefact_bytes": r.artefact_bytes,
    }


def _savings(r: Run, cost: Cost, baseline: Run | None) -> Savings:
    """Percent less than the baseline (all None for the baseline itself)."""
    if r is baseline:
        return Savings(wall_s=None, device_hours=None, peak_mem_gib=None, artefact_bytes=None)
    bt = baseline.timing if baseline is not None else {}
    return {
        "wall_s": roi_mod.savings_pct(cost["wall_s"], num(bt.get("wall_s"))),
        "device_hours": roi_mod.savings_pct(cost["device_hours"],
                                            device_hours(bt) if baseline is not None else None),
        "peak_mem_gib": roi_mod.savings_pct(cost["peak_mem_gib"], num(bt.get("peak_mem_gib"))),
        "artefact_bytes": roi_mod.savings_pct(r.artefact_bytes, baseline.artefact_bytes if baseline else None),
    }


def _time_pct(r: Run, cmp: Comparison) -> float | None:
    """The run's time (to the target quality, else the whole run) in percent of the baseline's."""
    if cmp.baseline is None:
        return None
    mine, base = cmp.roi_hours[id(r)].wall_s, cmp.roi_hours[id(cmp.baseline)].wall_s
    return 100.0 * mine / base if mine and base else None


def _yearly(r: Run, cmp: Comparison) -> RunROI:
    y = roi_mod.yearly(cmp.roi_hours[id(r)].device_hours, r.artefact_bytes,
                       is_full_ft=(r.method == roi_mod.BASELINE_METHOD),
                       backbone_bytes=cmp.storage.backbone_bytes, a=cmp.assumptions)
    base = cmp.baseline_yearly or {}
    return {"trainings_per_year": y["trainings_per_year"], "device_hours_per_year": y["device_hours_per_year"],
            "compute_cost_per_year": y["compute_cost_per_year"], "storage_bytes": y["storage_bytes"],
            "compute_cost_diff": roi_mod.diff(y["compute_cost_per_year"], base.get("compute_cost_per_year")),
            "storage_bytes_diff": roi_mod.diff(y["storage_bytes"], base.get("storage_bytes"))}


def _per_label(r: Run, primary: str) -> dict[str, LabelFigures]:
    src = (r.eval.get("label_level") or {}) if primary == "label_level" else r.eval
    return {str(name): {"mean_recall": float(pl["rsum"]) / 6.0, "rsum": float(pl["rsum"]),
                        "n_images": pl.get("n_images"), "n_captions": pl.get("n_captions")}
            for name, pl in (src.get("per_label") or {}).items() if is_num(pl.get("rsum"))}


def _loss_curve(run: Run, max_points: int = 200) -> LossCurve:
    rows = [r for r in run.train_rows if is_num(r.get("loss"))]
    use_time = bool(rows) and all(is_num(r.get("time_s")) for r in rows)
    pts = [[(float(r["time_s"]) / 60.0 if use_time else float(r.get("step") or i)), float(r["loss"])]
           for i, r in enumerate(rows)]
    if len(pts) > max_points:
        stride = len(pts) / max_points
        pts = [pts[int(i * stride)] for i in range(max_points)] + [pts[-1]]
    return {"x": "time_min" if use_time else "step", "points": pts}


def _provenance(r: Run) -> Provenance:
    tm = r.timing
    return {"device_name": tm.get("device_name"), "device_type": tm.get("device_type"),
            "n_devices": tm.get("n_devices"), "torch": tm.get("torch"), "mwa": tm.get("mwa"),
            "command": r.config.get("command"), "created": r.eval.get("created"),
            "budget_s": tm.get("budget_s"), "eval_numerics": r.eval.get("numerics")}

