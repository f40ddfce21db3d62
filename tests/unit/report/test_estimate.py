"""`mwa report --compare full-ft --estimate` end to end on the CPU: a tiny real run (beit3-tiny-test), no full
fine-tuning run, and the trainer's real full-FT step measurement (mwa_cli.train.estimate) on that run's data."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from mwa_cli.cli import app
from mwa_cli.report.estimate import EstimateRequest
from mwa_cli.train.config import TrainConfig
from mwa_cli.train.estimate import measure_full_ft_step
from mwa_cli.train.loop import train
from tests.helpers.data_dir import make_train_data_dir as train_make_data_dir
from tests.helpers.tokenizer import make_train_tokenizer as train_make_tokenizer

runner = CliRunner()


def backbone_params() -> int:
    from mwa_cli.models.presets import build_backbone

    model, _ = build_backbone("beit3-tiny-test", device="meta")
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("estimate")
    data = train_make_data_dir(root / "data")
    tok = train_make_tokenizer(root / "tok" / "tiny.model")
    cfg = TrainConfig(data_dir=str(data), backbone="beit3-tiny-test", tokenizer=str(tok), out=str(root / "runs"),
                      name="mwa", method="mwa", steps=3, batch_size=8, seed=0, log_every=1, val_evals=0,
                      workers=0, device="cpu", command="mwa train DATA --method mwa --steps 3")
    res = train(cfg)
    assert res.status == "completed", res.message
    yield res.run_dir, data
    torch.set_num_threads(before)


def test_measure_full_ft_step_on_real_batches(tiny_run):
    run, data = tiny_run
    config = json.loads((run / "config.json").read_text())
    config["method"] = "full-ft"
    before = sorted(p.name for p in run.iterdir())
    m = measure_full_ft_step(EstimateRequest(config=config, data_dir=data, reference_run=run, steps=2,
                                             warmup_steps=1))
    assert m.step_s > 0 and math.isfinite(m.step_s)
    assert m.samples_per_step == 8 and m.steps_measured == 2
    assert m.device_type == "cpu" and m.n_devices == 1 and m.device_name
    assert m.total_params == backbone_params() > json.loads((run / "timing.json").read_text())["trainable_params"]
    assert m.peak_mem_gib is not None and m.peak_mem_gib > 0
    assert sorted(p.name for p in run.iterdir()) == before  # nothing written into the run folder


def test_report_estimate_cli(tiny_run, tmp_path):
    run, _ = tiny_run
    out = tmp_path / "report.html"
    args = ["report", str(run), "--compare", "full-ft", "--estimate", "--estimate-steps", "2", "--out", str(out)]
    res = runner.invoke(app, [*args, "--json"], env={"COLUMNS": "160"})
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["baseline"]["estimated"] and not rep["baseline"]["found"]
    base = next(r for r in rep["runs"] if r["is_baseline"])
    assert base["estimated"]["cost"] and not base["estimated"]["recall"] and base["recall"] is None
    cost = base["cost"]
    for key in ("train_s", "wall_s", "samples_per_s", "device_hours", "trainable_params", "artefact_bytes"):
        assert isinstance(cost[key], (int, float)) and math.isfinite(cost[key]) and cost[key] > 0, (key, cost[key])
    assert cost["trainable_params"] == backbone_params()  # full fine-tuning trains the whole backbone
    assert cost["artefact_bytes"] == 4 * backbone_params()
    mwa = next(r for r in rep["runs"] if not r["is_baseline"])
    assert mwa["estimated"]["savings"] and not mwa["estimated"]["cost"]
    html = out.read_text(encoding="utf-8")
    assert html.count('<span class="est">estimated</span>') >= 5
    # the terminal summary marks the estimated figures too
    res = runner.invoke(app, args, env={"COLUMNS": "160"})
    assert res.exit_code == 0, res.output
    assert res.output.count("(estimated)") >= 3
