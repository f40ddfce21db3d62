"""Runs that came from `mwa tune` (trials, or runs trained with a tune's recommended configuration): the tune pages
the report links, and the note that says whether the comparison is between tuned methods."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mwa_cli.report.collect import Run
from mwa_cli.report.i18n import t
from mwa_cli.tune.layout import PAGE, tune_folder_of


def tune_of(run: Run | None) -> Path | None:
    """The tune folder `run` came from (None: not from a tune, or its folder is gone)."""
    return None if run is None or run.estimated else tune_folder_of(run.path, run.config)


def pages(runs: list[Run]) -> list[dict[str, Any]]:
    """[{"page", "runs"}]: each tune page (tune.html) the runs came from, with the runs that came from it."""
    found: dict[Path, list[str]] = {}
    for r in runs:
        folder = tune_of(r)
        if folder is not None and (folder / PAGE).is_file():
            found.setdefault((folder / PAGE).resolve(), []).append(r.name)
    return [{"page": str(p), "runs": names} for p, names in found.items()]


def notes(lang: str, runs: list[Run], main: Run | None, baseline: Run | None) -> list[str]:
    """What the comparison is between: two tuned methods, a tuned one against an untuned one, or (the verdict's
    runs both untuned) which other runs came from a tune."""
    if main is None or baseline is None or baseline.estimated:
        return []
    tuned_main, tuned_base = tune_of(main) is not None, tune_of(baseline) is not None
    if tuned_main and tuned_base:
        return [t(lang, "tune_both", main=main.name, baseline=baseline.name)]
    if tuned_main != tuned_base:
        tuned, other = (main, baseline) if tuned_main else (baseline, main)
        return [t(lang, "tune_one", tuned=tuned.name, other=other.name, method=other.method)]
    others = [r.name for r in runs if tune_of(r) is not None]
    return [t(lang, "tune_others", runs=", ".join(others), main=main.name, baseline=baseline.name)] if others else []


def links(rep: dict[str, Any]) -> list[dict[str, str]]:
    """The tune pages as links from the report's own folder (relative: the folder can move as a whole)."""
    base = Path(rep["html"]).resolve().parent if rep.get("html") else None
    out = []
    for entry in rep.get("tunes") or []:
        href = os.path.relpath(entry["page"], base) if base is not None else Path(entry["page"]).as_uri()
        out.append({"href": Path(href).as_posix(), "runs": ", ".join(entry["runs"])})
    return out
