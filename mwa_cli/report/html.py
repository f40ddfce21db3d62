"""Render the report dict as ONE self-contained HTML file with Jinja2 (autoescape on: captions, labels and run
names are user data and appear as text, never as markup).

The template is ``report.html.j2`` among the package's templates (``mwa_cli.templating``). CSS is inline,
charts are inline SVG (svg.py escapes its own text), thumbnails are ``data:`` URIs, and a Content-Security-Policy meta tag forbids scripts and every external request as a second
line of defence.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from markupsafe import Markup

from mwa_cli.fileio import atomic_write_text
from mwa_cli.report import svg, tuned, view
from mwa_cli.report.build import display_name
from mwa_cli.report.gallery import DataDir
from mwa_cli.report.glossary import glossary
from mwa_cli.report.i18n import STRINGS, t
from mwa_cli.report.model import Report
from mwa_cli.templating import get_template

TEMPLATE = "report.html.j2"


def charts(rep: Report, lang: str) -> dict[str, Any]:
    """Each chart drawn twice, for wide screens and for phones (the CSS shows one), so its text stays readable."""
    wide, narrow = _charts(rep, lang, svg.WIDE), _charts(rep, lang, svg.NARROW)
    out: dict[str, Any] = {k: Markup(wide[k] + narrow[k]) for k in wide}  # our own SVG, text escaped in svg.py
    out["has_per_label"] = any(r["per_label"] for r in rep["runs"])
    return out


def _charts(rep: Report, lang: str, size: svg.Size) -> dict[str, str]:
    runs = rep["runs"]
    points, vlines = [], []
    for i, r in enumerate(runs):
        wall = r["cost"]["wall_s"]
        color = svg.color_for(r["method"], i)
        label = display_name(r)
        if r["recall"] is not None and wall is not None:
            points.append({"label": label, "x": wall / 60.0, "y": r["recall"]["mean_recall"], "color": color})
        elif wall is not None and r["estimated"]["cost"]:
            vlines.append({"label": f"{label} ({t(lang, 'estimated')})", "x": wall / 60.0, "color": color})
    recall_time = svg.scatter(points, vlines=vlines, title=t(lang, "plot_recall_time"),
                              xlabel=t(lang, "plot_time_axis"), ylabel=t(lang, "plot_recall_axis"),
                              empty=t(lang, "plot_no_data"), size=size)
    series, xkinds = [], set()
    for i, r in enumerate(runs):
        lc = r["loss_curve"]
        if lc["points"]:
            xkinds.add(lc["x"])
            series.append({"label": display_name(r), "color": svg.color_for(r["method"], i), "points": lc["points"]})
    if len(xkinds) > 1:  # mixed x axes: keep the time-based ones
        series = [s for s, r in zip(series, [r for r in runs if r["loss_curve"]["points"]])
                  if r["loss_curve"]["x"] == "time_min"]
        xkinds = {"time_min"}
    xlabel = t(lang, "plot_loss_time_axis") if xkinds == {"time_min"} else t(lang, "plot_step_axis")
    loss = svg.lines(series, title=t(lang, "plot_loss"), xlabel=xlabel, ylabel=t(lang, "plot_loss_axis"),
                     empty=t(lang, "plot_no_data"), size=size)
    labels = sorted({lab for r in runs for lab in r["per_label"]})
    bar_series = [{"label": display_name(r), "color": svg.color_for(r["method"], i),
                   "values": [(r["per_label"].get(lab) or {}).get("mean_recall") for lab in labels]}
                  for i, r in enumerate(runs) if r["per_label"]]
    per_label = svg.grouped_bars(labels, bar_series, title=t(lang, "plot_per_label"),
                                 ylabel=t(lang, "plot_recall_axis"), empty=t(lang, "plot_no_data"), size=size)
    val_series = [{"label": display_name(r), "color": svg.color_for(r["method"], i),
                   "points": (r.get("time_to_quality") or {}).get("curve") or []}
                  for i, r in enumerate(runs) if (r.get("time_to_quality") or {}).get("curve")]
    val_time = svg.lines(val_series, title=t(lang, "plot_val_time"), xlabel=t(lang, "plot_time_axis"),
                         ylabel=t(lang, "plot_val_axis"), empty=t(lang, "plot_no_data"), size=size)
    return {"recall_time": recall_time, "loss": loss, "per_label": per_label, "val_time": val_time}


def galleries(rep: Report, data: DataDir | None) -> list[dict[str, Any]]:
    out = []
    for i, r in enumerate(rep["runs"]):
        g = r.get("gallery")
        if not (r["is_main"] or r["is_baseline"]) or (r["estimated"]["cost"] and not g):
            continue  # examples for the main method and the baseline only, to keep the file short
        g = copy.deepcopy(g) if g else None
        if g:
            for q in g["t2i"]:
                for res in q["results"]:
                    res["thumb"] = data.thumbnail(res["image_id"]) if data is not None else None
            for q in g["i2t"]:
                q["thumb"] = data.thumbnail(q["image_id"]) if data is not None else None
        out.append({"name": display_name(r), "color": svg.color_for(r["method"], i), "gallery": g,
                    "main": r["is_main"]})
    out.sort(key=lambda x: not x["main"])  # the compared method first, then the baseline
    return out


def render_html(rep: Report, data: DataDir | None = None) -> str:
    lang = rep.get("lang", "en")
    strings = dict(STRINGS["en"])
    strings.update(STRINGS.get(lang, {}))
    unit = t(lang, rep["hours_unit"])
    ctx = {
        "rep": rep, "lang": lang, "S": strings, "unit": unit,
        "methods": ", ".join(display_name(r) for r in rep["runs"] if not r["is_baseline"]) or "—",
        "recall_rows": view.recall_rows(rep, None, lang), "cost_rows": view.cost_rows(rep, lang),
        "secondary": view.secondary_protocol(rep),
        "secondary_rows": (view.recall_rows(rep, view.secondary_protocol(rep), lang) if view.secondary_protocol(rep)
                           else []),
        "roi_withheld": view.withheld(rep), "ttq_floor_note": view.ttq_floor_note(rep, lang),
        "chance_note": t(lang, "chance_note") if view.reference_rows(rep, rep.get("primary_protocol") or "instance",
                                                                     lang) else "",
        "roi_rows": view.roi_rows(rep), "assumptions": view.assumption_lines(rep, lang),
        "provenance": view.provenance_rows(rep), "charts": charts(rep, lang),
        "galleries": galleries(rep, data), "data_missing": data is None,
        "ttq_rows": view.ttq_rows(rep, lang), "seed_rows": view.seed_rows(rep, lang),
        "ttq_rows_shown": any((r.get("time_to_quality") or {}).get("checks") for r in rep["runs"]),
        "ttq_help": t(lang, "sec_ttq_help", target=rep["time_to_quality"]["target_pct"],
                      ref=(f"{rep['time_to_quality']['reference_best_val_rsum']:.1f}"
                           if rep["time_to_quality"]["reference_best_val_rsum"] else "—")),
        "ci_note": next((t(lang, "ci_note", resamples=rep["bootstrap"]["resamples"], n=r["recall_ci"]["n_images"],
                           seed=rep["bootstrap"]["seed"]) for r in rep["runs"] if r.get("recall_ci")), ""),
        "trivial_note": view.trivial_note(rep, lang), "glossary": glossary(lang), "tune_links": tuned.links(rep),
        "fmt_t": lambda key, **kw: t(lang, key, **kw),
    }
    return get_template(TEMPLATE).render(**ctx)


def write_html(rep: Report, path: Path, data: DataDir | None = None) -> Path:
    html = render_html(rep, data)
    atomic_write_text(path, html)
    return path
