"""Training speaks one protocol: on data whose captions repeat, every val figure it logs and prints is the
label-level one and says so; a budget far below the default schedule is said when the plan is made; `--seeds`
trains one run per seed, named and grouped."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from mwa_cli.cli import app
from mwa_cli.commands.progress import TrainProgress
from mwa_cli.train.config import TrainConfig
from mwa_cli.train.loop import train
from tests.helpers.data_dir import TRAIN_COLORS, TRAIN_SHAPES, image_id, write_data_dir

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def templated_data(tmp_path_factory):
    """24 photos of 4 labels, each label's photos sharing its two captions (as class-folder templates do)."""
    root = tmp_path_factory.mktemp("templated")
    rng = np.random.default_rng(0)
    rows, images = [], []
    splits = ["train"] * 16 + ["val"] * 4 + ["test"] * 4
    for i in range(24):
        k = (i // 2) % 4  # pairs of photos share a label: every split has repeated captions
        label = TRAIN_SHAPES[k]
        img = (rng.random((32, 32, 3)) * 60).astype(np.uint8)
        img[8:24, 8:24] = np.array([k * 60, 90, 200 - k * 40], dtype=np.uint8)
        images.append(img)
        for caption in (f"a {TRAIN_COLORS[k]} {label} on a steel plate", f"{label} mark on the left"):
            rows.append({"image_id": image_id(img), "path": f"{label}/{i}.png", "caption": caption, "label": label,
                         "split": splits[i], "width": 32, "height": 32})
    return write_data_dir(root, images, rows, source=root / "photos", fmt="folders")


def _cfg(data, tok, out, name, **kw) -> TrainConfig:
    base = dict(data_dir=str(data), backbone="beit3-tiny-test", tokenizer=str(tok), out=str(out), name=name,
                method="mwa", steps=4, batch_size=8, seed=0, log_every=1, val_evals=1, workers=0, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def test_val_figures_are_the_primary_protocols_and_named(templated_data, train_tokenizer, tmp_path, capsys):
    printed = []
    progress = TrainProgress(quiet=False)
    progress.print = printed.append  # the lines the terminal shows
    res = train(_cfg(templated_data, train_tokenizer, tmp_path, "level"), progress)
    assert res.status == "completed", res.message
    ev = json.loads((res.run_dir / "eval.json").read_text())
    assert ev["primary_protocol"] == "label_level"
    rows = [json.loads(x) for x in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    checks = [r for r in rows if r["kind"] == "eval"]
    assert checks and all(r["protocol"] == "label_level" and "instance_rsum" in r for r in checks)
    timing = json.loads((res.run_dir / "timing.json").read_text())
    assert timing["best"]["protocol"] == "label_level"
    assert timing["best"]["val_rsum"] == max(r["rsum"] for r in checks)  # one protocol: the best is among the rows
    evals = [ln for ln in printed if ln.startswith("  eval step")]
    assert evals and all("(label level; i2t R@1" in ln for ln in evals)
    assert f"RSUM {ev['label_level']['rsum']:.2f} (label level)" in res.message


def test_unique_captions_stay_instance_level(train_data_dir, train_tokenizer, tmp_path):
    res = train(_cfg(train_data_dir, train_tokenizer, tmp_path, "inst"))
    rows = [json.loads(x) for x in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    ev = json.loads((res.run_dir / "eval.json").read_text())
    assert all(r["protocol"] == "instance" and r["rsum"] == r["instance_rsum"] for r in rows if r["kind"] == "eval")
    assert f"RSUM {ev['rsum']:.2f} (instance level)" in res.message


@pytest.mark.slow
def test_a_budget_below_the_default_schedule_is_said_when_the_plan_is_made(train_data_dir, train_tokenizer, tmp_path,
                                                                         monkeypatch):
    from mwa_cli.train.trainer import Trainer

    real_step = Trainer.step

    def slow_step(self, batch):  # a slow machine: 0.25 s a step, so 6 s fit far fewer than the default 40 steps
        time.sleep(0.25)
        return real_step(self, batch)

    monkeypatch.setattr(Trainer, "step", slow_step)
    events = []
    res = train(_cfg(train_data_dir, train_tokenizer, tmp_path, "short", steps=None, budget="6s", val_evals=0),
                lambda event, data: events.append((event, data)))
    said = [data["text"] for event, data in events if event == "message"]
    assert res.status == "completed", res.message
    plan = json.loads((res.run_dir / "config.json").read_text())["plan"]
    assert plan["default_steps"] == 40  # 10 epochs of 32 pairs at batch 8 (captions do not repeat)
    notes = [s for s in said if s.startswith("this budget allows ≈")]
    assert len(notes) == 1, said
    planned = int(notes[0].split("≈ ")[1].split(" ")[0])
    assert planned < 40 and f"{planned} steps, {100 * planned / 40:.0f} % of the default 40 for this data (10 " \
        "epochs)" in notes[0]
    kinds = [event for event, _ in events]
    said_at = next(i for i, (event, data) in enumerate(events) if event == "message" and data["text"] == notes[0])
    assert "step" in kinds[said_at + 1:]  # said at plan time, while training went on, not at its end


def test_seeds_train_one_named_run_per_seed(train_data_dir, train_tokenizer, tmp_path):
    args = ["train", str(train_data_dir), "--backbone", "beit3-tiny-test", "--tokenizer", str(train_tokenizer),
            "--method", "nke", "--steps", "2", "--batch-size", "8", "--val-evals", "0", "--workers", "0",
            "--device", "cpu", "--out", str(tmp_path / "runs"), "--name", "nke-x", "--seed", "3"]
    res = CliRunner().invoke(app, [*args, "--seeds", "2", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert [r["status"] for r in out] == ["completed", "completed"]
    for seed in (3, 4):
        cfg = json.loads((tmp_path / "runs" / f"nke-x-s{seed}" / "config.json").read_text())
        assert cfg["seed"] == seed and cfg["name"] == f"nke-x-s{seed}"
    from mwa_cli.report.collect import collect
    from mwa_cli.report.evidence import seed_groups

    groups = seed_groups(collect([], tmp_path / "runs").runs)
    assert [sorted(r.name for r in g) for g in groups.values()] == [["nke-x-s3", "nke-x-s4"]]
    for bad, message in ((["--seeds", "0"], "--seeds must be at least 1"),
                         (["--seeds", "2", "--resume", "nke-x-s3"], "--seeds cannot be combined with --resume")):
        refused = CliRunner().invoke(app, [*args, *bad])
        assert refused.exit_code == 2 and message in refused.output and "Traceback" not in refused.output
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["nke-x-s3", "nke-x-s4"]
