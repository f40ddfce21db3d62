"""`mwa demo` end to end on a few steps: real prepare, real training of three methods, real report; the same
numbers from two demos."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mwa_cli.cli import app
from mwa_cli.models.presets import MINI_DIR

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (MINI_DIR / "weights.safetensors").is_file(),
                                 reason="built-in beit3-mini weights are not installed")]


def test_demo_writes_report_with_measured_numbers(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--steps-per-method", "6",
                                      "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    methods = {}
    for name in ("frozen", "mwa", "nke", "full-ft"):
        run = tmp_path / "runs" / name
        evaluation = json.loads((run / "eval.json").read_text())
        timing = json.loads((run / "timing.json").read_text())
        assert evaluation["split"] == "test" and evaluation["n_images"] > 0
        methods[name] = (evaluation, timing)
        assert f"{evaluation['rsum']:.1f}" in html, f"{name}'s RSUM is not in the report"
    for name in ("mwa", "nke", "full-ft"):
        assert methods[name][1]["steps"] == 6, f"{name} did not train the fixed steps"
    assert methods["frozen"][1]["trainable_params"] == 0
    assert methods["mwa"][1]["trainable_params"] < 0.05 * methods["full-ft"][1]["trainable_params"]
    assert "<script" not in html.lower()
    by_method = {r["method"]: r for r in report["runs"]}
    assert set(by_method) == set(methods)
    primary = report["primary_protocol"]  # sample_data's captions repeat: the label-level protocol leads
    for name, (evaluation, timing) in methods.items():  # --json gives the measured numbers, not copies
        shown = evaluation if primary == "instance" else evaluation[primary]
        assert by_method[name]["recall"]["rsum"] == pytest.approx(shown["rsum"])
        assert by_method[name]["by_protocol"]["instance"]["recall"]["rsum"] == pytest.approx(evaluation["rsum"])
        assert by_method[name]["cost"]["trainable_params"] == timing["trainable_params"]
    assert report["baseline"]["method"] == "full-ft" and not report["baseline"]["estimated"]

    # run again in the same folder: finished runs are kept as they are; an interrupted one continues
    before = {n: (tmp_path / "runs" / n / "eval.json").read_bytes() for n in methods}
    (tmp_path / "runs" / "nke" / "eval.json").unlink()  # as if stopped during its final evaluation
    (tmp_path / "runs" / "nke" / "adapter_model.safetensors").unlink()
    again = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--steps-per-method", "6",
                                     "--device", "cpu"])
    assert again.exit_code == 0, again.output
    text = " ".join(again.output.split())
    assert "full-ft finished in an earlier `mwa demo`: kept" in text and "3/3 writing the report" in text
    assert text.count("report.html") == 1, "the report's path is printed once"
    assert "training nke for 6 steps (seed 0)" in text and "done" in text  # nke's stage had its bar
    assert "nke: 6 steps in " in text  # the time each took
    for name in ("frozen", "mwa", "full-ft"):
        assert (tmp_path / "runs" / name / "eval.json").read_bytes() == before[name]
    resumed = json.loads((tmp_path / "runs" / "nke" / "eval.json").read_text())
    assert resumed["rsum"] == json.loads(before["nke"])["rsum"]  # the same weights, evaluated again


def test_demo_force_removes_only_earlier_demo_runs(tmp_path):
    from mwa_cli.demo import _remove_demo_runs
    from mwa_cli.train.run_dir import RunDir

    run = RunDir.create(tmp_path / "runs", "mwa")
    run.unlock()
    mine = tmp_path / "runs" / "notes"
    mine.mkdir()
    (mine / "keep.txt").write_text("user's")
    said = []
    _remove_demo_runs(tmp_path / "runs", said.append)
    assert not run.path.exists() and (mine / "keep.txt").read_text() == "user's"
    assert said == [f"--force: removed 1 earlier demo run(s) from {tmp_path / 'runs'}"]


def test_demo_refuses_zero_seeds_before_doing_anything(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "d"), "--seeds", "0", "--device", "cpu"])
    assert result.exit_code == 2
    assert "--seeds must be at least 1" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "d").exists()


def test_two_demos_give_the_same_numbers(tmp_path):
    """Fixed steps and fixed validation checks: nothing depends on how fast the machine is."""
    import torch

    from mwa_cli.demo import run_demo

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        said = []
        first = run_demo(tmp_path / "a", steps_per_method=4, methods=("mwa", "full-ft"), device="cpu",
                         say=said.append)
        second = run_demo(tmp_path / "b", steps_per_method=4, methods=("mwa", "full-ft"), device="cpu",
                          say=said.append)
    finally:
        torch.set_num_threads(before)
    for name in ("frozen", "mwa", "full-ft"):
        a, b = (json.loads((r.runs_dir / name / "eval.json").read_text()) for r in (first, second))
        assert a["rsum"] == b["rsum"] and a["label_level"]["rsum"] == b["label_level"]["rsum"], name
        assert (first.runs_dir / name / "eval_ranks.json").read_bytes() == \
            (second.runs_dir / name / "eval_ranks.json").read_bytes()
    assert first.report["verdict"] == second.report["verdict"]
    assert sum(line.startswith("      mwa: 4 steps in ") for line in said) == 2
