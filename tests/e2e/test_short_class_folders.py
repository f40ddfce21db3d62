"""The textile case, small: three class folders with English label descriptions, beit3-mini, MWA and full fine-tuning
cut short (3 steps), through the real prepare, training and report. The report must not compare them: it names what
happened (no better than the untrained backbone, collapse, far shorter than the default schedule), says what to do,
prices nothing, and gets the zero-shot figures from its cache without any frozen run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mwa_cli.data.label_text import parse_label_text_items
from mwa_cli.data.prepare import prepare_dataset
from mwa_cli.models.presets import MINI_DIR
from mwa_cli.train.config import TrainConfig
from mwa_cli.train.loop import train
from scripts.make_class_folders import build_class_folders
from tests.helpers.paths import REPO

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.skipif(not (MINI_DIR / "weights.safetensors").is_file(),
                                 reason="built-in beit3-mini weights are not installed")]

LABELS = {"no_defect": "nominal", "scratch": "local", "rust": "global"}


@pytest.fixture(scope="module")
def short_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("textile")
    build_class_folders(root / "raw", only=tuple(LABELS), per_label=20)
    for src, dst in LABELS.items():
        (root / "raw" / src).rename(root / "raw" / dst)
    texts = parse_label_text_items(["nominal=a flawless woven cloth", "local=a cloth with a small local flaw",
                                    "global=a cloth discoloured all over"])
    prepare_dataset(root / "raw", root / "data", fmt="folders", lang="en", split="0.5,0.25,0.25", progress=False,
                    label_texts=texts, workers=1)
    for method in ("mwa", "full-ft"):
        res = train(TrainConfig(data_dir=str(root / "data"), backbone="beit3-mini", method=method, steps=3,
                                out=str(root / "runs"), name=method, device="cpu", workers=0, seed=0, val_evals=1))
        assert res.status == "completed", res.message
    return root


def _report(root, *extra):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    env.pop("COLUMNS", None)
    return subprocess.run([sys.executable, "-m", "mwa_cli", "report", "--runs", str(root / "runs"), *extra],
                          capture_output=True, text=True, env=env, timeout=300, cwd=str(root))


def test_runs_cut_short_get_no_verdict_and_no_price(short_runs):
    proc = _report(short_runs, "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rep = json.loads(proc.stdout)
    assert "evaluating the untrained beit3-mini on the test split once" in proc.stderr
    assert rep["primary_protocol"] == "label_level"
    assert rep["references"]["zero_shot"]["source"] == "evaluated"
    assert rep["references"]["chance"]["label_level"]["rsum"] > 0
    assert rep["decision"]["kind"] == "no_verdict" and rep["decision"]["roi_withheld"]
    assert sorted(rep["decision"]["runs_not_learned"]) == ["full-ft", "mwa"]
    for run in rep["runs"]:
        assert run["learning"]["status"] in ("did_not_learn", "collapsed") and run["roi"] is None
        assert run["learning"]["schedule"]["short"] and run["learning"]["schedule"]["steps"] == 3
    verdict = rep["verdict"]
    assert verdict.startswith("No verdict:") and "MWA did not learn" in verdict and "Full FT did not learn" in verdict
    default = rep["runs"][0]["learning"]["schedule"]["default_steps"]
    assert f"train longer (the default schedule for this data is {default:,} steps; these runs had 3" in verdict
    assert "check the label descriptions" in verdict and "larger backbone or image size" in verdict
    assert "USD" not in verdict and "kept" not in verdict and "better" not in verdict
    assert any(n.startswith("mwa trained 3 steps") and "will not mean much" in n for n in rep["notes"])
    html = (short_runs / "runs" / "report.html").read_text(encoding="utf-8")
    assert "No yearly cost" in html and "Chance (random ranking)" in html and "Zero-shot (beit3-mini" in html


def test_the_second_report_reads_the_zero_shot_cache_and_fits_80_columns(short_runs):
    _report(short_runs, "--json")  # makes sure the cache is there, whichever test runs first
    cached = list((short_runs / "data" / "cache" / "zero_shot").glob("*.json"))
    assert len(cached) == 1
    proc = _report(short_runs, "--no-zero-shot")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "evaluating the untrained" not in proc.stderr
    assert max(len(line) for line in proc.stdout.splitlines()) <= 80
    text = " ".join(proc.stdout.replace("│", " ").split())
    assert "Zero-shot (beit3-mini, untrained)" in text and "No verdict:" in text
