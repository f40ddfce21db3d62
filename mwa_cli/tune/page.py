"""The tune's HTML page beside its trials (<tune>/tune.html): per method, every trial's val curve against its
time and the time each needed to reach the target against its best val RSUM, the chosen trial marked, and the
trial table. The packaged template tune.html.j2 through the pages' one Jinja environment (`mwa_cli.templating`:
autoescape on); charts are the report's inline SVG (no scripts, no external requests)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from markupsafe import Markup

from mwa_cli.fileio import atomic_write_text
from mwa_cli.report import svg
from mwa_cli.templating import get_template
from mwa_cli.tune.summary import rows

if TYPE_CHECKING:
    from mwa_cli.tune.search import MethodResult, TuneResult

TEMPLATE = "tune.html.j2"
COLORS = {"chosen": "#c2410c", "best": "#1d4ed8", "complete": "#60a5fa", "pruned": "#9ca3af", "failed": "#d1d5db",
          "running": "#d1d5db"}


def _role(m: "MethodResult", r) -> str:
    rec = m.recommendation
    return "chosen" if r is rec.chosen else "best" if r is rec.best else r.state


def _label(m: "MethodResult", r) -> str:
    role = _role(m, r)
    return f"{r.name} ★ chosen" if role == "chosen" else f"{r.name} (best)" if role == "best" else \
        f"{r.name}{'' if r.state == 'complete' else ' · ' + r.state}"


def charts(m: "MethodResult", size: svg.Size) -> dict[str, str]:
    """The curves (val recall per check against time) and the trade-off (time to the target against best val
    recall) of one method's trials. Recall is RSUM / 6 (the mean of the six R@K, percent), the scale of the
    report's charts; time in seconds for short trials, else minutes."""
    rec = m.recommendation
    shown = [r for r in m.records if r.curve]
    shown.sort(key=lambda r: (r is rec.chosen, r is rec.best))  # the chosen trial drawn last, on top
    longest = max((r.curve[-1][0] for r in shown), default=0.0)
    unit, per = ("seconds", 1.0) if longest < 120 else ("minutes", 60.0)
    series = [{"label": _label(m, r), "color": COLORS[_role(m, r)],
               "points": [[t / per, v / 6.0] for t, v in r.curve]} for r in shown]
    ylabel = "val recall % (RSUM / 6)"
    curves = svg.lines(series, title=f"{m.method}: val recall of every trial over its time",
                       xlabel=f"{unit} (without validation checks)", ylabel=ylabel,
                       empty="no trial has a validation check yet", size=size)
    target = rec.target
    points = [{"label": _label(m, r), "x": r.time_to(target) / per, "y": r.best / 6.0, "color": COLORS[_role(m, r)]}
              for r in m.records if r.state == "complete" and target is not None and r.time_to(target) is not None]
    pct = f"{100 * rec.share:g} %"
    trade = svg.scatter(points, title=f"{m.method}: time to {pct} of the best against best val recall",
                        xlabel=f"{unit} to {pct} of the best val RSUM", ylabel=f"best {ylabel}",
                        empty="no completed trial reached the target", size=size)
    return {"curves": curves, "trade": trade}


def render(result: "TuneResult", record: dict[str, Any]) -> str:
    sections = []
    for m in result.methods:
        wide, narrow = charts(m, svg.WIDE), charts(m, svg.NARROW)
        sections.append({"m": m, "rec": m.recommendation, "rows": rows(m.records, m.recommendation, width=12),
                         "charts": {k: Markup(wide[k] + narrow[k]) for k in wide}})  # our own SVG, text escaped
    from mwa_cli import __version__

    return get_template(TEMPLATE).render(result=result, record=record, sections=sections, version=__version__,
                                         compared=len(result.methods) > 1)


def write_page(result: "TuneResult", record: dict[str, Any]) -> None:
    atomic_write_text(result.page, render(result, record))
