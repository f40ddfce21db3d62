"""One call that does what `mwa report` does (collect -> optional estimate -> build -> write HTML), so tests
and scripts can use it without the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from mwa_cli.report import references, roi
from mwa_cli.report.build import build_report, open_data_dir
from mwa_cli.report.choice import choose, with_estimate
from mwa_cli.report.collect import collect
from mwa_cli.report.estimate import MeasureFn, estimate_full_ft_run
from mwa_cli.report.html import write_html
from mwa_cli.report.model import Report
from mwa_cli.runs import is_run_dir

DEFAULT_NAME = "report.html"


def default_out(run_dirs: list[Path], runs_root: Path | None) -> Path:
    """Where the HTML goes without --out: <--runs folder>/report.html, else the run folders' common parent."""
    if runs_root is not None:
        return (runs_root if runs_root.is_dir() and not is_run_dir(runs_root)
                else runs_root.parent) / DEFAULT_NAME
    return run_dirs[0].parent / DEFAULT_NAME


def make_report(
    run_dirs: list[Path],
    runs_root: Path | None = None,
    *,
    compare: str = roi.BASELINE_METHOD,
    assumptions: roi.Assumptions | None = None,
    lang: str = "en",
    out: Path | None = None,
    estimate: bool = False,
    measure: MeasureFn | None = None,
    estimate_steps: int = 10,
    data_dir: Path | None = None,
    write: bool = True,
    target_pct: int = 95,
    zero_shot: bool = True,
    say: Callable[[str], None] | None = None,
) -> Report:
    """Collect, build and (unless write=False) write the HTML; returns the report dict (with "html" set).

    `zero_shot`: evaluate the untrained backbone when neither a frozen run nor the data dir's cache has it (once
    per data set; False: use only what is there); `say` receives a line before that evaluation."""
    coll = collect(run_dirs, runs_root)
    choice = choose(coll.runs, compare)
    ref = choice.main or choice.baseline or coll.runs[0]  # the run whose backbone the zero-shot reference is
    notes: list[str] = []
    if estimate and choice.baseline is not None:
        notes.append(f"--estimate ignored: a measured {compare} run ({choice.baseline.name}) exists")
    elif estimate and choice.main is not None:
        choice = with_estimate(choice, estimate_full_ft_run(choice.main, measure, steps=estimate_steps,
                                                            data_dir=data_dir))
    data = open_data_dir(coll.runs, data_dir)
    zero, why = references.zero_shot(coll.runs, ref, data_dir=data_dir, evaluate=zero_shot, say=say)
    rep = build_report(coll, choice=choice, compare=compare, assumptions=assumptions, lang=lang, data_dir=data_dir,
                       estimate_steps=estimate_steps, data=data, target_pct=target_pct, zero_shot=zero,
                       zero_shot_note=why)
    rep["notes"].extend(notes)
    if write:
        path = out or default_out(run_dirs, runs_root)
        rep["html"] = str(path)
        write_html(rep, path, data)
    return rep
