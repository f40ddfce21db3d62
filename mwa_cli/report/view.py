"""Formatted table rows from the report dict, shared by the terminal (console.py) and the HTML (html.py), so
both show exactly the same figures. Each cell: {"text", "estimated", "cls"} where cls is "good"/"bad"/"" for
colouring deltas and savings."""

from __future__ import annotations

from typing import Any

from mwa_cli.eval.small_split import MARK, trivial_recalls
from mwa_cli.report.build import display_name
from mwa_cli.report.i18n import t
from mwa_cli.report.model import Report, RunEntry
from mwa_cli.report.numbers import (
    fmt_bytes,
    fmt_count,
    fmt_delta,
    fmt_duration,
    fmt_int,
    fmt_money,
    fmt_num,
    fmt_pct,
    is_num,
)
from mwa_cli.report.run_entry import RECALL_KEYS
from mwa_cli.report.svg import color_for


def _cell(text: str, estimated: bool = False, cls: str = "", sub: str = "", sub_cls: str = "",
          sub_estimated: bool = False) -> dict[str, Any]:
    return {"text": text, "estimated": estimated and text != "—", "cls": cls, "sub": sub, "sub_cls": sub_cls,
            "sub_estimated": sub_estimated and bool(sub)}


def _sign_cls(x: Any, good_if_positive: bool = True, eps: float = 0.05) -> str:
    if not is_num(x) or abs(x) < eps:
        return ""
    return "good" if (x > 0) == good_if_positive else "bad"


def _kept_cls(kept: Any) -> str:
    """Green at or above full FT's RSUM, red below 95 % of it, plain in between."""
    if not is_num(kept):
        return ""
    return "good" if kept >= 100.0 else ("bad" if kept < 95.0 else "")


def secondary_protocol(rep: Report) -> str | None:
    """The protocol shown beside the primary one, when some run has numbers under it."""
    other = "instance" if rep.get("primary_protocol") == "label_level" else "label_level"
    has = any((r.get("by_protocol") or {}).get(other, {}).get("recall") for r in rep["runs"])
    return other if has else None


def fmt_interval(ci: Any, signed: bool = False) -> str:
    """"58–66" (or "−9…+5" for differences); "" without an interval."""
    if not ci or not all(is_num(x) for x in ci):
        return ""
    if signed:  # whole points: the interval's own uncertainty makes a decimal meaningless
        return f"{fmt_delta(ci[0], 0)}…{fmt_delta(ci[1], 0)}".replace("-", "−")
    return f"{fmt_num(ci[0], 0)}–{fmt_num(ci[1], 0)}"


def _diff_cls(ci: Any) -> str:
    """Coloured only when the paired interval excludes 0 (a difference the test set can tell)."""
    if not ci:
        return ""
    return "good" if ci[0] > 0 else "bad" if ci[1] < 0 else ""


def withheld(rep: Report) -> bool:
    """True when the runs did not learn: no ROI, and no green or red for recall differences."""
    return bool((rep.get("decision") or {}).get("roi_withheld"))


def _run_name(r: RunEntry, lang: str) -> str:
    status = (r.get("learning") or {}).get("status")
    tag = {"did_not_learn": "tag_did_not_learn", "collapsed": "tag_collapsed"}.get(status or "")
    return display_name(r) + (f" ({t(lang, tag)})" if tag else "")


def recall_rows(rep: Report, protocol: str | None = None, lang: str = "en") -> list[dict[str, Any]]:
    """Rows of the recall table: the primary protocol (`protocol` None), each recall with its 95 % interval below
    it (or, for runs without per-query ranks, its Δ to the baseline); or the named secondary protocol (points
    and Δ only: the intervals are computed for the primary protocol). Then the chance and zero-shot rows."""
    rows = []
    trivial = trivial_recalls(rep["dataset"])
    plain = withheld(rep)
    for i, r in enumerate(rep["runs"]):
        src = (r.get("by_protocol") or {}).get(protocol, {}) if protocol else r
        rec, d = src.get("recall"), src.get("recall_delta") or {}
        ci = {} if protocol else (r.get("recall_ci") or {}).get("ci95") or {}
        dci = {} if protocol else (r.get("recall_delta_ci") or {}).get("ci95") or {}
        cells = []
        for direction, k in RECALL_KEYS:
            v = rec[direction][k] if rec else None
            dv = d.get(f"{direction}_{k}")
            key = f"{direction}_{k}"
            text = fmt_num(v) + (MARK if v is not None and int(k[1:]) in trivial[direction] else "")
            if ci.get(key):
                cells.append(_cell(text, sub=fmt_interval(ci[key])))
            else:
                cells.append(_cell(text, sub=fmt_delta(dv) if dv is not None else "",
                                   sub_cls="" if plain else _sign_cls(dv)))
        dr = d.get("rsum")
        rows.append({
            "name": _run_name(r, lang), "run": r["name"], "method": r["method"], "color": color_for(r["method"], i),
            "estimated_run": r["estimated"]["cost"], "reference": False,
            "is_baseline": r["is_baseline"], "is_main": r["is_main"], "cells": cells,
            "rsum": _cell(fmt_num(rec["rsum"] if rec else None), estimated=r["estimated"]["recall"],
                          sub=fmt_interval(ci.get("rsum"))),
            "delta_rsum": _cell(fmt_delta(dr) if dr is not None else "—",
                                cls="" if plain else _diff_cls(dci.get("rsum")) if dci else _sign_cls(dr),
                                sub=fmt_interval(dci.get("rsum"), signed=True)),
            "kept": _cell(fmt_pct(src.get("rsum_kept_pct")),
                          cls=_kept_cls(src.get("rsum_kept_pct")) if not (r["is_baseline"] or plain) else ""),
        })
    return rows + reference_rows(rep, protocol or rep.get("primary_protocol") or "instance", lang,
                                 with_ci=protocol is None)


def reference_rows(rep: Report, protocol: str, lang: str, with_ci: bool = True) -> list[dict[str, Any]]:
    """The chance row (its RSUM with the range of random rankings) and the zero-shot row (unless the frozen run
    is already a row), in the recall table's row shape."""
    refs = rep.get("references") or {}
    out = []
    zero = refs.get("zero_shot")
    if zero and not zero.get("shown_as_run") and (zero.get("by_protocol") or {}).get(protocol):
        ci = ((zero.get("recall_ci") or {}).get("ci95") or {}) if with_ci else {}
        out.append(_reference_row(t(lang, "row_zero_shot", backbone=zero.get("backbone") or "?"),
                                  zero["by_protocol"][protocol], ci, "frozen"))
    chance = (refs.get("chance") or {}).get(protocol)
    if chance:
        out.append(_reference_row(t(lang, "row_chance"), chance, {"rsum": chance.get("rsum_ci95")} if with_ci else {},
                                  "chance"))
    return out


def _reference_row(name: str, rec: dict[str, Any], ci: dict[str, Any], method: str) -> dict[str, Any]:
    cells = [_cell(fmt_num(rec[d][k]), sub=fmt_interval(ci.get(f"{d}_{k}"))) for d, k in RECALL_KEYS]
    return {"name": name, "run": None, "method": method, "color": color_for(method, 0), "estimated_run": False,
            "reference": True, "is_baseline": False, "is_main": False, "cells": cells,
            "rsum": _cell(fmt_num(rec["rsum"]), sub=fmt_interval(ci.get("rsum"))), "delta_rsum": _cell("—"),
            "kept": _cell("—")}


def trivial_note(rep: Report, lang: str) -> str:
    """'† R@5 and R@10 are 100 % by construction: only 4 test images.' for the recall table, or ''."""
    ds, trivial = rep["dataset"], trivial_recalls(rep["dataset"])
    notes = []
    for direction, arrow, n, what in (("t2i", "T→I", ds.get("n_images"), "trivial_images"),
                                      ("i2t", "I→T", ds.get("n_captions"), "trivial_captions")):
        if trivial[direction]:
            names = ", ".join(f"{arrow} R@{k}" for k in trivial[direction])
            notes.append(t(lang, "trivial_note", recalls=names, n=n, split=ds.get("split") or "test",
                           what=t(lang, what)))
    return f"{MARK} " + " ".join(notes) if notes else ""


def _saving(x: Any, lang: str, digits: int = 0) -> tuple[str, str]:
    """("60 % less", "good") style sub-line for a saving in percent (positive = less than the baseline)."""
    if not is_num(x):
        return "", ""
    if abs(x) < 0.5 * 10 ** (-digits):
        return t(lang, "same_as_baseline"), ""
    key = "less_than_baseline" if x > 0 else "more_than_baseline"
    top = 100 - 0.5 * 10 ** (-digits)  # would round to 100: say "> 99.9 %" rather than "100 % less"
    pct = f"> {fmt_pct(100 - 10 ** (-digits), digits)}" if top <= x < 100 else fmt_pct(abs(x), digits)
    return t(lang, key, pct=pct), ("good" if x > 0 else "bad")


def cost_rows(rep: Report, lang: str) -> list[dict[str, Any]]:
    rows = []
    plain = withheld(rep)
    for i, r in enumerate(rep["runs"]):
        c, s = r["cost"], r["savings_pct"]
        ce, se = r["estimated"]["cost"], r["estimated"]["savings"]
        hours_unit = t(lang, c["hours_unit"]) if rep["hours_unit"] == "device_hours" else ""
        tp = c["trainable_pct"]

        def with_saving(text: str, key: str, digits: int = 0) -> dict[str, Any]:
            sub, cls = _saving(s[key], lang, digits)
            cls = "" if plain else cls  # runs that learned nothing: a saving is no good news
            return _cell(text, ce, sub=sub, sub_cls=cls, sub_estimated=se and not ce)

        rows.append({
            "name": display_name(r), "method": r["method"], "color": color_for(r["method"], i),
            "is_baseline": r["is_baseline"], "is_main": r["is_main"], "estimated_run": r["estimated"]["cost"],
            "wall": with_saving(fmt_duration(c["wall_s"], lang), "wall_s"),
            "hours": with_saving(fmt_num(c["device_hours"], 3 if (c["device_hours"] or 0) < 10 else 1)
                                 + (f" {hours_unit}" if hours_unit and c["device_hours"] is not None else ""),
                                 "device_hours"),
            "sps": _cell(fmt_num(c["samples_per_s"]), ce),
            "mem": with_saving(fmt_num(c["peak_mem_gib"]) + (" GiB" if is_num(c["peak_mem_gib"]) else ""),
                               "peak_mem_gib"),
            "trainable": _cell(fmt_count(c["trainable_params"]), ce,
                               sub=(f"{tp:.2f} %" if is_num(tp) else "")),
            "artefact": with_saving(fmt_bytes(c["artefact_bytes"]), "artefact_bytes", 1),
            "savings": {k: s[k] for k in s},
        })
    return rows


def ttq_rows(rep: Report, lang: str) -> list[dict[str, Any]]:
    """Best val RSUM and the time to each target share of the baseline's best (step below), per run; "—" for a
    run that trains nothing and for a target the zero-shot backbone already meets."""
    rows = []
    for i, r in enumerate(rep["runs"]):
        q = r.get("time_to_quality") or {}
        cells = {}
        for pct in rep["time_to_quality"]["targets"]:
            hit = (q.get("to") or {}).get(str(pct))
            if hit is not None:
                hours = fmt_num(hit["device_hours"], 4 if hit["device_hours"] < 0.1 else 2)
                cells[str(pct)] = _cell(fmt_duration(hit["time_s"], lang),
                                        sub=f"{hours} {t(lang, rep['hours_unit'])} · step {hit['step']}")
            else:
                measured = q.get("checks") and q.get("reference") and pct not in (q.get("below_floor") or [])
                cells[str(pct)] = _cell(t(lang, "not_reached") if measured else "—")
        rows.append({"name": display_name(r), "method": r["method"], "color": color_for(r["method"], i),
                     "is_baseline": r["is_baseline"], "is_main": r["is_main"], "estimated_run": r["estimated"]["cost"],
                     "best": _cell(fmt_num(q.get("best_val_rsum"))), "to": cells})
    return rows


def ttq_floor_note(rep: Report, lang: str) -> str:
    """Why a target is not measured: it is not above the zero-shot backbone's val RSUM; '' when all are."""
    below = sorted({p for r in rep["runs"] for p in (r.get("time_to_quality") or {}).get("below_floor") or []})
    zero = rep["time_to_quality"].get("zero_shot_val_rsum")
    if not below or zero is None:
        return ""
    return t(lang, "ttq_below_zero_shot", pcts=" / ".join(str(p) for p in below), zero=fmt_num(zero))


def seed_rows(rep: Report, lang: str) -> list[dict[str, Any]]:
    """One row per group of runs that differ only by seed: mean ± sd."""
    def pm(x: Any, duration: bool = False) -> dict[str, Any]:
        if not x:
            return _cell("—")
        f = (lambda v: fmt_duration(v, lang)) if duration else fmt_num
        return _cell(f"{f(x['mean'])} ± {f(x['sd'])}")

    rows = []
    for g in rep.get("seed_groups") or []:
        rows.append({"name": f"{g['method']} ({g['name']}…)", "method": g["method"],
                     "seeds": _cell(", ".join(str(s) for s in g["seeds"])), "test": pm(g["test_rsum"]),
                     "best": pm(g["best_val_rsum"]),
                     "to": {str(p): pm(g.get(f"to_{p}_s"), duration=True) for p in rep["time_to_quality"]["targets"]},
                     "reached": g["reached"], "n": len(g["runs"])})
    return rows


def roi_rows(rep: Report) -> list[dict[str, Any]]:
    """The yearly cost rows; none when the runs did not learn (nothing to put a price on)."""
    if withheld(rep):
        return []
    cur = rep["assumptions"]["currency"]
    rows = []
    for i, r in enumerate(rep["runs"]):
        y = r["roi"]
        e = r["estimated"]["roi"]
        ce = r["estimated"]["cost"]
        at_least = "≥ " if r.get("roi_basis") == "not_reached" else ""
        rows.append({
            "name": display_name(r), "method": r["method"], "color": color_for(r["method"], i),
            "is_baseline": r["is_baseline"], "is_main": r["is_main"], "estimated_run": r["estimated"]["cost"],
            "trainings": _cell(fmt_int(y["trainings_per_year"])),
            "hours_year": _cell(at_least + fmt_num(y["device_hours_per_year"]), ce),
            "cost_year": _cell(at_least + fmt_money(y["compute_cost_per_year"], cur), ce),
            "storage": _cell(fmt_bytes(y["storage_bytes"]), e),
            "cost_diff": _cell(fmt_money(y["compute_cost_diff"], cur, signed=True) if not r["is_baseline"] else "—",
                               e, _sign_cls(-(y["compute_cost_diff"] or 0), eps=0.005)),
            "storage_diff": _cell(fmt_bytes(y["storage_bytes_diff"], signed=True) if not r["is_baseline"] else "—",
                                  e, _sign_cls(-(y["storage_bytes_diff"] or 0), eps=0.5)),
        })
    return rows


def assumption_lines(rep: Report, lang: str) -> list[str]:
    a = rep["assumptions"]
    unit_single = {"gpu_hours": "gpu_hour", "cpu_hours": "cpu_hour"}.get(rep["hours_unit"], "device_hour")
    bb = a.get("backbone_bytes")
    return [
        t(lang, "assume_cost", cost=f"{a['gpu_cost_per_hour']:g}", currency=a["currency"],
          unit_single=t(lang, unit_single)),
        t(lang, "assume_lines", lines=a["lines"]),
        t(lang, "assume_retrains", retrains=a["retrains_per_year"]),
        t(lang, "roi_basis_note", target=rep["time_to_quality"]["target_pct"])
        if any(r.get("roi_basis") == "time_to_quality" for r in rep["runs"]) else t(lang, "assume_hours"),
        t(lang, "assume_storage", backbone_size=fmt_bytes(bb),
          backbone_est=(", " + t(lang, "estimated")) if a.get("backbone_bytes_estimated") and bb else ""),
    ]


def eval_numerics_text(n: dict[str, Any]) -> str:
    """How a run's recall was computed, e.g. 'evaluated in bf16 on cuda, batch 128'."""
    return f"evaluated in {n.get('precision', '?')} on {n.get('device', '?')}, batch {n.get('batch_size', '?')}"


def provenance_rows(rep: Report) -> list[dict[str, Any]]:
    rows = []
    for r in rep["runs"]:
        p = r["provenance"]
        dev = p.get("device_name") or p.get("device_type") or "—"
        if p.get("n_devices") and int(p["n_devices"]) > 1:
            dev = f"{p['n_devices']} × {dev}"
        if p.get("eval_numerics"):
            dev += f" · {eval_numerics_text(p['eval_numerics'])}"
        cmd = p.get("command")
        if isinstance(cmd, list):
            cmd = " ".join(str(c) for c in cmd)
        rows.append({
            "name": display_name(r), "backbone": r["backbone"], "device": dev,
            "versions": f"{p.get('torch') or '—'} / {p.get('mwa') or '—'}",
            "date": (str(p.get("created") or "—"))[:19].replace("T", " "), "command": cmd or "—",
            "estimated": r["estimated"]["cost"],
        })
    return rows
