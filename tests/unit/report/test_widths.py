"""The terminal report fits its terminal: at 80, 100 and 120 columns, on a very narrow one, and piped (80), no line
is longer than the width, every figure of every table is printed whole and every sentence keeps all its words."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from rich.cells import cell_len
from rich.console import Console

from mwa_cli.eval.bootstrap import QueryRanks, save_ranks
from mwa_cli.report import view
from mwa_cli.report.api import make_report
from mwa_cli.report.console import print_report
from tests.helpers.paths import REPO
from tests.helpers.report_builder import make_data_dir, make_run

BOX = str.maketrans({c: " " for c in "│╭╮╰╯─"})


def _report_runs(tmp_path):
    """Full FT, MWA and LoRA with per-query ranks, validation curves and three seeds of each of the first two."""
    data = make_data_dir(tmp_path, n_test=30)
    df = pd.read_csv(data / "manifest.csv", dtype=str, keep_default_na=False)
    test = df[df.split == "test"]
    ids = list(dict.fromkeys(test.image_id))
    t2i = np.array([ids.index(i) for i in test.image_id])
    runs = tmp_path / "runs"
    for method, hits, wall in (("full-ft", (26, 25, 27), 3600.0), ("mwa", (25, 26, 24), 1440.0),
                               ("lora", (20,), 1800.0)):
        for seed, k in enumerate(hits):
            run = make_run(runs, f"{method}-s{seed}", method, data, recall=100 * k / 30, wall_s=wall)
            cfg = json.loads((run / "config.json").read_text())
            (run / "config.json").write_text(json.dumps(dict(cfg, seed=seed)))
            save_ranks(run, "test", QueryRanks(np.array([1] * k + [30] * (30 - k)), np.array([2] * len(t2i)), t2i))
            with open(run / "metrics.jsonl", "a", encoding="utf-8") as f:
                for i, (secs, rsum) in enumerate(((0, 150.0), (wall / 4, 380.0 + k), (wall * 0.9, 420.0 + k))):
                    f.write(json.dumps({"kind": "eval", "step": 10 * i, "split": "val", "rsum": rsum,
                                        "time_s": secs + 1.0, "time_no_val_s": secs}) + "\n")
    return runs


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    root = tmp_path_factory.mktemp("widths")
    runs = _report_runs(root)
    full = make_report([], runs, out=root / "report.html")
    # the same runs, none of which learned anything: the no-verdict layout
    stalled_root = tmp_path_factory.mktemp("widths_stalled")
    data = make_data_dir(stalled_root, n_test=30)
    stalled_runs = stalled_root / "runs"
    for name in ("full-ft", "mwa"):
        run = make_run(stalled_runs, name, name, data, recall=0.0)
        cfg = json.loads((run / "config.json").read_text())
        (run / "config.json").write_text(json.dumps(dict(cfg, positives_detail={"pairs": 1040, "templated": True},
                                                         batch_size=32)))
    stalled = make_report([], stalled_runs, write=False)
    assert stalled["decision"]["kind"] == "no_verdict" and full["decision"]["kind"] == "compare"
    return {"full": full, "stalled": stalled, "runs": runs}


def _figures(rep, lang="en") -> set[str]:
    """Every figure a table shows (the cell texts and the small lines under them)."""
    cells = []
    for row in view.recall_rows(rep):
        cells += row["cells"] + [row["rsum"], row["delta_rsum"], row["kept"]]
    for row in view.cost_rows(rep, lang):
        cells += [row[k] for k in ("wall", "hours", "sps", "mem", "trainable", "artefact")]
    for row in view.roi_rows(rep):
        cells += [row[k] for k in ("trainings", "hours_year", "cost_year", "storage", "cost_diff", "storage_diff")]
    for row in view.ttq_rows(rep, lang):
        cells += [row["best"], *row["to"].values()]
    for row in view.seed_rows(rep, lang):
        cells += [row["seeds"], row["test"], row["best"]]
    return {x for c in cells for x in (c["text"], c["sub"]) if x}


def _sentences(rep, lang="en") -> list[str]:
    from mwa_cli.report.i18n import t

    out = [rep["verdict"], *rep["notes"]]
    if any(r.get("recall_ci") for r in rep["runs"]):
        out.append(t(lang, "ci_note", resamples=2000, n=30, seed=0))
    if view.reference_rows(rep, rep["primary_protocol"], lang):
        out.append(t(lang, "chance_note"))
    if not view.withheld(rep):
        out += view.assumption_lines(rep, lang)
    return out


def _check(text: str, width: int, rep) -> None:
    lines = text.splitlines()
    too_long = [ln for ln in lines if cell_len(ln.rstrip()) > width]
    assert not too_long, f"{len(too_long)} line(s) wider than {width}: {too_long[:2]}"
    flat = " ".join(text.translate(BOX).split())  # lines joined: a figure may wrap at a space, never inside a word
    missing = [f for f in _figures(rep) if " ".join(f.split()) not in flat]
    assert not missing, f"figures cut or broken at width {width}: {missing[:5]}"
    for sentence in _sentences(rep):
        assert " ".join(sentence.split()) in flat, f"words lost at width {width}: {sentence[:60]}…"


@pytest.mark.parametrize("which", ["full", "stalled"])
@pytest.mark.parametrize("width", [80, 100, 120, 44])
def test_the_terminal_report_fits(reports, which, width):
    rep = reports[which]
    con = Console(width=width, record=True, color_system=None)
    print_report(rep, con)
    _check(con.export_text(), width, rep)


def test_a_wide_terminal_gets_whole_tables_and_a_narrow_one_stacked_columns(reports):
    def render(width):
        con = Console(width=width, record=True, color_system=None)
        print_report(reports["full"], con)
        return con.export_text()

    wide, narrow = render(200), render(80)
    header_lines = [ln for ln in wide.splitlines() if ln.lstrip().startswith("Method")]
    assert sum("R@1" in ln for ln in wide.splitlines()) >= 1
    assert len([ln for ln in narrow.splitlines() if ln.lstrip().startswith("Method")]) > len(header_lines)
    tiny = render(30)
    assert "  I→T R@1: " in tiny  # too narrow for any table: one block per row


@pytest.mark.slow  # a real subprocess or several commands: seconds
def test_piped_output_fits_80_columns(reports):
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "mwa_cli", "report", "--runs", str(reports["runs"]), "--no-zero-shot",
                           "--out", str(reports["runs"] / "piped.html")], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    _check(proc.stdout, 80, reports["full"])
