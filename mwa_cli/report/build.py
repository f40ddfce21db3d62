"""Assemble the report: one JSON-ready dict (report/model.py: `Report`) that the terminal tables, the HTML and
``--json`` all show. build_report reads as its steps: what the runs are measured against (`Comparison`), one
entry per run, the notes, the decision and verdict, then the report's header sections."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any, cast

from mwa_cli import __version__
from mwa_cli.eval.bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED, bootstrap
from mwa_cli.eval.zero_shot import ZeroShot
from mwa_cli.models.sources import random_on_purpose
from mwa_cli.report import evidence, learning, tuned
from mwa_cli.report import roi as roi_mod
from mwa_cli.report import verdict as verdict_mod
from mwa_cli.report.choice import Choice, choose
from mwa_cli.report.collect import Collection, Run, resolve_data_dir
from mwa_cli.report.comparison import Comparison, compare_runs
from mwa_cli.report.estimate import full_ft_command
from mwa_cli.report.gallery import DataDir
from mwa_cli.report.i18n import t
from mwa_cli.report.model import (
    AssumptionsInfo,
    BaselineInfo,
    DatasetInfo,
    Decision,
    HoursUnit,
    References,
    Report,
    RunEntry,
    SeedGroupRow,
    TimeToQualityInfo,
    TunePage,
    ZeroShotReference,
)
from mwa_cli.report.numbers import fmt_money, fmt_pct, is_num
from mwa_cli.report.protocols import PROTOCOLS, protocol_sentences, recall_under
from mwa_cli.report.run_entry import ordered_runs, run_entry
from mwa_cli.train.budget import share_text


def build_report(
    coll: Collection,
    *,
    choice: Choice | None = None,
    compare: str = roi_mod.BASELINE_METHOD,
    assumptions: roi_mod.Assumptions | None = None,
    lang: str = "en",
    data_dir: Path | None = None,
    estimate_steps: int | None = None,
    data: DataDir | None = None,
    target_pct: int = 95,
    zero_shot: ZeroShot | None = None,
    zero_shot_note: str | None = None,
) -> Report:
    """Build the report. `choice` (report/choice.py; picked from `coll` against `compare` when not given) holds
    the baseline, which may be an estimate (estimate.py); ``zero_shot`` (references.zero_shot) is the untrained
    backbone's evaluation, ``zero_shot_note`` why it is missing."""
    choice = choice if choice is not None else choose(list(coll.runs), compare)
    data = data if data is not None else open_data_dir(list(choice.runs), data_dir)
    cmp = compare_runs(coll, choice, compare, assumptions or roi_mod.Assumptions(), data, zero_shot, target_pct)
    entries = [run_entry(r, cmp) for r in ordered_runs(choice)]
    notes = _notes(lang, coll, cmp, entries, zero_shot_note, estimate_steps)
    seed_rows = _seed_rows(cmp.groups, entries)
    decision = _decide(entries, cmp)
    verdict = _verdict(lang, coll.runs[0], cmp, entries, decision, seed_rows)
    if decision["roi_withheld"]:
        entries = [_withhold_roi(x) for x in entries]
    return {
        "schema_version": 1,
        "created": _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds"),
        "lang": lang,
        "mwa_version": __version__,
        "compare": compare,
        "baseline": _baseline_info(cmp),
        "dataset": _dataset_info(coll, data),
        "assumptions": _assumptions_info(cmp),
        "hours_unit": _hours_unit_of(entries),
        "runs": entries,
        "references": _references(cmp, zero_shot_note),
        "verdict": verdict,
        "verdict_estimated": cmp.baseline_estimated,
        "decision": decision,
        "bootstrap": {"resamples": DEFAULT_RESAMPLES, "seed": DEFAULT_SEED, "level": 0.95, "unit": "test image"},
        "time_to_quality": _ttq_info(cmp),
        "seed_groups": seed_rows,
        "notes": notes,
        "tunes": cast("list[TunePage]", tuned.pages(list(choice.runs))),  # the `mwa tune` pages these runs came from
        "skipped": [list(s) for s in coll.skipped],
        "protocol": coll.runs[0].eval.get("protocol"),
        "primary_protocol": cmp.primary,
        "protocols": protocol_sentences([r.eval or {} for r in choice.runs]),
        "html": None,
    }


# ---- notes, decision, verdict --------------------------------------------------------------------------------
def _notes(lang: str, coll: Collection, cmp: Comparison, entries: list[RunEntry], zero_shot_note: str | None,
           estimate_steps: int | None) -> list[str]:
    """What the reader must know to read the figures, in the order the report shows them."""
    choice, baseline, runs = cmp.choice, cmp.baseline, list(cmp.choice.runs)
    notes = list(choice.notes)
    notes += [t(lang, "random_weights_note", name=r.name) for r in coll.runs
              if random_on_purpose(r.config.get("weights"))]
    notes += tuned.notes(lang, runs, choice.main, baseline)
    if (baseline is not None and not cmp.baseline_estimated and cmp.ref_best is None
            and evidence.val_curve(baseline.eval_rows, cmp.primary)):
        notes.append(t(lang, "ttq_no_gain", run=baseline.name))
    notes += _curve_protocol_notes(runs, cmp.primary, lang)
    notes += [t(lang, "short_run" if x["learning"]["schedule"]["short"] else "shorter_run", name=x["name"],
                **_schedule_words(x["learning"]["schedule"]))
              for x in entries if x["learning"]["schedule"]["below_default"] and x["method"] != "frozen"]
    if cmp.zero_shot is None and zero_shot_note:
        notes.append(t(lang, "zero_shot_missing", why=zero_shot_note))
    if baseline is not None and cmp.baseline_estimated:
        notes.insert(0, t(lang, "estimated_note", steps=baseline.timing.get("measured_steps") or estimate_steps or "?",
                          ref=(choice.main.name if choice.main else "?")))
    return notes


def _curve_protocol_notes(runs: list[Run], protocol: str, lang: str) -> list[str]:
    """Runs whose val checks were logged under another protocol (older mwa): left out of time to quality."""
    old = [r.name for r in runs if evidence.val_curve(r.eval_rows) and not evidence.val_curve(r.eval_rows, protocol)
           and protocol != "instance"]
    return [t(lang, "curve_other_protocol", runs=", ".join(old))] if old else []


def _schedule_words(sched: dict[str, Any]) -> dict[str, str]:
    return {"steps": f"{sched['steps']:,}", "pct": share_text(sched["share_pct"]),
            "default": f"{sched['default_steps']:,}"}


def _main_and_baseline(entries: list[RunEntry]) -> tuple[RunEntry | None, RunEntry | None]:
    return (next((x for x in entries if x["is_main"]), None), next((x for x in entries if x["is_baseline"]), None))


def _decide(entries: list[RunEntry], cmp: Comparison) -> Decision:
    """Whether the runs can be compared (the main run and a measured baseline learned), and the seeds' evidence."""
    main, baseline = cmp.choice.main, cmp.baseline
    m, b = _main_and_baseline(entries)
    stalled = learning.stalled([m, b] if not cmp.baseline_estimated else [m])  # type: ignore[list-item]
    seeds = None
    if main is not None and baseline is not None and not cmp.baseline_estimated:
        seeds = evidence.seed_difference(_seeds_of(main, cmp), _seeds_of(baseline, cmp))
    return {"kind": "no_verdict" if stalled else "compare", "roi_withheld": bool(stalled),
            "runs_not_learned": [x["name"] for x in stalled], "seeds": seeds,
            "single_seed": seeds is None and main is not None and baseline is not None and not cmp.baseline_estimated}


def _seeds_of(run: Run, cmp: Comparison) -> list[Run]:
    """The run's seed group, or the run alone."""
    name = cmp.group_of.get(id(run))
    return cmp.groups[name] if name is not None else [run]


def _verdict(lang: str, first: Run, cmp: Comparison, entries: list[RunEntry], decision: Decision,
             seed_rows: list[SeedGroupRow]) -> str:
    m, b = _main_and_baseline(entries)
    baseline, a = cmp.baseline, cmp.assumptions
    if decision["kind"] == "no_verdict":
        shown: list[dict[str, Any]] = [dict(x, display=_display_method(x)) for x in (m, b) if x is not None]
        stalled = [x for x in shown if x["name"] in decision["runs_not_learned"]]
        text = verdict_mod.no_verdict(lang, stalled, list(shown), labels=cmp.primary == "label_level")
    elif baseline is None:
        text = t(lang, "verdict_none")
    elif m is None:
        text = t(lang, "verdict_only_baseline")
    elif cmp.baseline_estimated:
        text = t(lang, "verdict_time_only", method=_display_method(m), time=fmt_pct(m["time_pct_of_baseline"], 0),
                 cost=_estimated_cost_words(lang, m, a.currency))
    else:
        n_test = first.eval.get("n_images")
        text = verdict_mod.verdict(lang, dict(m, display=_display_method(m)), b,  # type: ignore[arg-type]
                                   target_pct=cmp.target_pct, currency=a.currency,
                                   groups=seed_rows,  # type: ignore[arg-type]
                                   baseline_method=cmp.compare, n_test=n_test if is_num(n_test) else None,
                                   split=str(first.split or "test"), seeds=decision["seeds"])
    if cmp.primary == "label_level" and m is not None and baseline is not None:
        text += " " + t(lang, "verdict_label_level")
    return text


def _estimated_cost_words(lang: str, m: RunEntry, currency: str) -> str:
    """The yearly compute cost against an estimated baseline: saved, extra, or nothing to say."""
    cost_diff = m["roi"]["compute_cost_diff"] if m["roi"] is not None else None
    if cost_diff is None or not is_num(cost_diff):
        return ""
    if cost_diff < 0:
        return t(lang, "verdict_cost", saving=fmt_money(-cost_diff, currency))
    if cost_diff > 0:
        return t(lang, "verdict_cost_more", saving=fmt_money(cost_diff, currency))
    return ""


def _withhold_roi(x: RunEntry) -> RunEntry:
    """Nothing learned, so nothing to price: no yearly cost, no time saved (terminal, HTML, --json)."""
    return {**x, "roi": None, "roi_basis": None, "time_pct_of_baseline": None}


# ---- the report's header sections ----------------------------------------------------------------------------
def _baseline_info(cmp: Comparison) -> BaselineInfo:
    baseline, main = cmp.baseline, cmp.choice.main
    ordered = ordered_runs(cmp.choice)
    ref = main or (ordered[0] if ordered else None)
    return {
        "run": baseline.name if baseline is not None else None,
        "method": cmp.compare,
        "found": baseline is not None and not cmp.baseline_estimated,
        "estimated": cmp.baseline_estimated,
        "train_command": (full_ft_command(ref) if ref is not None and (baseline is None or cmp.baseline_estimated)
                          else None),
    }


def _dataset_info(coll: Collection, data: DataDir | None) -> DatasetInfo:
    first = coll.runs[0]
    counts = (data.info if data is not None else {}).get("counts") or {}
    return {
        "hash": coll.dataset_hash, "images": counts.get("images"), "captions": counts.get("captions"),
        "split": first.split, "n_images": first.eval.get("n_images"), "n_captions": first.eval.get("n_captions"),
        "data_dir": str(data.path) if data is not None else first.config.get("data_dir"),
    }


def _assumptions_info(cmp: Comparison) -> AssumptionsInfo:
    return {**cmp.assumptions.as_dict(), "backbone_bytes": cmp.storage.backbone_bytes,  # type: ignore[typeddict-item]
            "backbone_bytes_estimated": cmp.storage.estimated}


def _hours_unit_of(entries: list[RunEntry]) -> HoursUnit:
    """The runs' common unit (GPU- or CPU-hours), else "device_hours"."""
    units = {x["cost"]["hours_unit"] for x in entries}
    return units.pop() if len(units) == 1 else "device_hours"


def _ttq_info(cmp: Comparison) -> TimeToQualityInfo:
    return {"target_pct": cmp.target_pct, "targets": list(evidence.TARGETS), "reference_best_val_rsum": cmp.ref_best,
            "reference_run": cmp.baseline.name if cmp.baseline is not None else None,
            "zero_shot_val_rsum": next(iter({v["floor"] for v in cmp.ttq.values()} - {None}), None)}


def _seed_rows(groups: dict[str, list[Run]], entries: list[RunEntry]) -> list[SeedGroupRow]:
    """Mean and spread over each seed group's runs (test RSUM, best val RSUM, time to each target)."""
    seed_rows = []
    for gname, g in groups.items():
        rows = [x for x in entries if x["seed_group"] == gname]
        hits = [x["time_to_quality"]["to"] for x in rows]
        seed_rows.append(cast(SeedGroupRow, {  # to_<target>_s: one key for each of evidence.TARGETS
            "name": gname, "method": g[0].method, "runs": [x["name"] for x in rows],
            "seeds": sorted(x["seed"] for x in rows if x["seed"] is not None),
            "test_rsum": evidence.spread([x["recall"]["rsum"] if x["recall"] else None  # type: ignore[misc]
                                          for x in rows]),  # spread() leaves the Nones out
            "best_val_rsum": evidence.spread([x["time_to_quality"]["best_val_rsum"] for x in rows]),
            **{f"to_{p}_s": evidence.spread([(h.get(str(p)) or {}).get("time_s") for h in hits])  # type: ignore[misc]
               for p in evidence.TARGETS},
            "reached": {str(p): sum(1 for h in hits if h.get(str(p))) for p in evidence.TARGETS},
        }))
    return seed_rows


def _references(cmp: Comparison, note: str | None) -> References:
    """The report's `references`: chance per protocol, and the zero-shot backbone (None, with the note why)."""
    zero = cmp.zero_shot
    return {"chance": cmp.chance, "zero_shot": _zero_shot_reference(zero, cmp) if zero is not None else None,
            "zero_shot_note": None if zero is not None else note}


def _zero_shot_reference(zero: ZeroShot, cmp: Comparison) -> ZeroShotReference:
    ranks = learning.zero_shot_ranks(zero, cmp.primary)
    run_name = zero.path.name if zero.source == "run" and zero.path is not None else None
    return {"source": zero.source, "path": str(zero.path) if zero.path else None, "run": run_name,
            "backbone": zero.eval.get("backbone"),
            "shown_as_run": run_name is not None and any(r.name == run_name for r in cmp.choice.runs),
            "by_protocol": {p: recall_under(zero.eval, p) for p in PROTOCOLS},  # type: ignore[misc]
            "recall_ci": bootstrap(ranks, resamples=DEFAULT_RESAMPLES, seed=DEFAULT_SEED) if ranks else None}


# ---- shared with the terminal and the HTML -------------------------------------------------------------------
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


def _display_method(run_dict: RunEntry | dict[str, Any]) -> str:
    from mwa_cli.adapters import registry  # torch-free

    return registry.display_name(run_dict["method"])


def display_name(run_dict: RunEntry | dict[str, Any]) -> str:
    """"MWA (runs/mwa-2h)" style label: method name, and the run name when it says more."""
    m = _display_method(run_dict)
    return m if run_dict["name"].lower() in (run_dict["method"].lower(), m.lower()) else f"{m} · {run_dict['name']}"
