"""Trainer building blocks: budget parsing, config resolution, schedule, loss, param groups, data, checkpoints."""

from __future__ import annotations

import json
import math
import os
import shutil

import pytest
import torch
import torch.nn.functional as F

from mwa_cli.errors import ConfigError
from mwa_cli.models.preprocess import to_pixels
from mwa_cli.train.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from mwa_cli.train.config import TrainConfig, default_steps, load_config_file, parse_budget, resolve_config
from mwa_cli.train.data import augment_batch, crop_boxes, epoch_order, flip_allowed_mask, mentions_left_right
from mwa_cli.train.loss import contrastive_loss
from mwa_cli.train.schedule import WarmupCosine


@pytest.mark.parametrize("text,seconds", [("2h", 7200), ("90m", 5400), ("3600s", 3600), ("1h30m", 5400),
                                          ("1.5h", 5400), ("3600", 3600), ("20s", 20), ("10 min", 600)])
def test_parse_budget(text, seconds):
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "2x", "-5m", "0s"])
def test_parse_budget_rejects(text):
    with pytest.raises(ConfigError):
        parse_budget(text)


def test_config_file_then_cli(tmp_path):
    js = tmp_path / "c.json"
    js.write_text(json.dumps({"method": "nke", "lr": 1e-3, "batch-size": 16, "budget": "90m"}))
    cfg = resolve_config({"lr": 5e-4, "method": None, "backbone": "beit3-mini"}, js)
    assert (cfg.method, cfg.lr, cfg.batch_size, cfg.budget_s) == ("nke", 5e-4, 16, 5400)
    toml = tmp_path / "c.toml"
    toml.write_text('[train]\nmethod = "lora"\nepochs = 3\nmethod_options = { rank = 16 }\n')
    cfg = resolve_config({"backbone": "beit3-mini"}, toml)
    assert cfg.method == "lora" and cfg.epochs == 3 and cfg.method_options == {"rank": 16}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"lrr": 1}))
    with pytest.raises(ConfigError, match="lrr"):
        load_config_file(bad)
    with pytest.raises(ConfigError):
        resolve_config({"method": "bogus"})
    assert TrainConfig(batch_size="auto").validate().batch_size == "auto"
    assert TrainConfig(batch_size="64").validate().batch_size == 64


def test_default_length_is_longer_and_batch_independent_for_templated_captions():
    assert default_steps(False, 792, 24)[0] == 240  # 10 epochs
    assert default_steps(True, 792, 24)[0] == 960  # 40 epochs at batch 32
    # batch 128: 6 steps per epoch, but the same 960 steps (160 epochs): a larger batch does not make up for steps
    steps, how = default_steps(True, 792, 6)
    assert steps == 960 and how.startswith("160 epochs")
    assert default_steps(True, 792, 99)[0] == 40 * 99  # a smaller batch: 40 of its own epochs
    assert default_steps(True, 10, 1)[0] == 40  # fewer pairs than one reference batch


def test_schedule_warmup_then_cosine():
    s = WarmupCosine(base_lr=1.0, min_lr=0.01, warmup_frac=0.1)
    s.fit(100)
    lrs = [s.lr_at(i) for i in range(100)]
    assert s.warmup_steps == 10
    assert 0 < lrs[0] < 0.1  # starts near 0
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:11]))  # rises during warm-up
    assert lrs[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # then decays
    assert s.lr_at(100) == pytest.approx(0.01)
    state = s.state_dict()
    s2 = WarmupCosine(base_lr=3.0)
    s2.load_state_dict(state)
    assert s2.lr_at(37) == s.lr_at(37)


def test_contrastive_loss_matches_reference():
    torch.manual_seed(0)
    img = F.normalize(torch.randn(6, 16), dim=-1)
    txt = F.normalize(torch.randn(6, 16), dim=-1)
    scale = torch.tensor(math.log(1 / 0.07))
    logits = scale.exp() * img @ txt.t()
    ref = 0.5 * (F.cross_entropy(logits, torch.arange(6)) + F.cross_entropy(logits.t(), torch.arange(6)))
    assert torch.allclose(contrastive_loss(img, txt, scale), ref)
    assert torch.allclose(contrastive_loss(img, txt, scale), contrastive_loss(txt, img, scale))
    assert contrastive_loss(img, img, scale) < ref  # aligned pairs give a lower loss


@pytest.mark.parametrize("text,hit", [
    ("a scratch on the upper-left of the plate", True), ("Dent at RIGHT edge", True), ("rotated clockwise", True),
    ("左上に長い傷がある金属板", True), ("右側のへこみ", True), ("a bright stain", False), ("copyright mark", False),
    ("中央に傷", False), ("a long scratch", False), ("leftover residue", True)])
def test_flip_guard(text, hit):
    assert mentions_left_right(text) is hit


def test_flip_modes():
    caps = ["left scratch", "a dent"]
    assert flip_allowed_mask(caps, "auto").tolist() == [False, True]
    assert flip_allowed_mask(caps, "on").tolist() == [True, True]
    assert flip_allowed_mask(caps, "off").tolist() == [False, False]


def test_augmentation_geometry():
    g = torch.Generator().manual_seed(0)
    boxes = crop_boxes(500, g, scale_min=0.5)
    x0, y0, w, h = boxes.unbind(1)
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x0 + w <= 1 + 1e-6).all() and (y0 + h <= 1 + 1e-6).all()
    area = w * h
    assert (area >= 0.5 - 1e-5).all() and (area <= 1 + 1e-5).all()
    img = torch.randint(0, 256, (2, 16, 16, 3), dtype=torch.uint8)
    full = torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 2)
    same = augment_batch(img, full, torch.tensor([False, False]), 16)
    assert torch.allclose(same, to_pixels(img, 16), atol=1e-4)  # full box, no flip = plain normalise
    assert same.min() >= -1 - 1e-5 and same.max() <= 1 + 1e-5  # mean = std = 0.5
    flipped = augment_batch(img, full, torch.tensor([True, False]), 16)
    assert torch.allclose(flipped[0], same[0].flip(-1), atol=1e-4)
    assert torch.allclose(flipped[1], same[1], atol=1e-4)


def test_epoch_order_is_deterministic():
    assert torch.equal(epoch_order(50, 3, 1), epoch_order(50, 3, 1))
    assert not torch.equal(epoch_order(50, 3, 1), epoch_order(50, 3, 2))
    assert sorted(epoch_order(50, 3, 1).tolist()) == list(range(50))


def test_checkpoint_atomic_and_fallback(tmp_path):
    run = tmp_path / "run"
    save_checkpoint(run / "checkpoint", {"step": 1, "x": torch.ones(3)}, {"step": 1})
    save_checkpoint(run / "checkpoint", {"step": 2, "x": torch.ones(3) * 2}, {"step": 2})
    last = find_checkpoint(run)
    assert last.name == "last" and load_checkpoint(last)["step"] == 2
    assert not list((run / "checkpoint").glob(".tmp-*")) and not (run / "checkpoint" / "last.old").exists()
    # a kill between the two renames leaves only last.old: it is found and complete
    os.replace(run / "checkpoint" / "last", run / "checkpoint" / "last.old")
    (run / "checkpoint" / ".tmp-999-1").mkdir()  # half-written temp folder: ignored
    assert find_checkpoint(run).name == "last.old"
    assert load_checkpoint(find_checkpoint(run))["step"] == 2
    save_checkpoint(run / "checkpoint", {"step": 3}, {"step": 3})
    assert load_checkpoint(find_checkpoint(run))["step"] == 3
    assert not list((run / "checkpoint").glob(".tmp-*"))
    shutil.rmtree(run / "checkpoint" / "last")
    assert find_checkpoint(run) is None


def test_run_dir_refuses_started_runs_but_reuses_aborted_starts(tmp_path):
    from mwa_cli.train.run_dir import RunDir

    run = RunDir.create(tmp_path, "a")
    run.write_config({"x": 1})  # stopped before its first checkpoint
    run.append_metrics({"kind": "eval", "step": 0})
    run.unlock()  # the process that made it is gone
    again = RunDir.create(tmp_path, "a")
    assert not again.config_path.exists() and not again.metrics_path.exists()
    (again.path / "checkpoint" / ".tmp-1-2").mkdir(parents=True)  # its first checkpoint was cut short
    again.unlock()
    again = RunDir.create(tmp_path, "a")
    assert not (again.path / "checkpoint" / ".tmp-1-2").exists()
    (again.path / "checkpoint" / "last").mkdir()
    again.unlock()
    with pytest.raises(ConfigError, match="already exists"):
        RunDir.create(tmp_path, "a")


def test_metrics_truncation_on_resume(tmp_path):
    from mwa_cli.train.run_dir import RunDir

    run = RunDir.create(tmp_path, "m")
    for step in range(1, 8):
        run.append_metrics({"kind": "train", "step": step})
    with open(run.metrics_path, "a") as f:
        f.write('{"kind": "train", "st')  # a line cut by SIGKILL
    run.truncate_metrics(4)
    assert [r["step"] for r in run.read_metrics()] == [1, 2, 3, 4]


def test_a_backbone_without_weights_is_refused_unless_asked_for_by_name():
    """Leaving out --weights must not train a random BEiT-3 for hours: refused with where to get the weights."""
    from mwa_cli.models.sources import TOKENIZER_URL, WEIGHTS_URLS

    with pytest.raises(ConfigError, match="no pretrained weights for beit3-base") as exc:
        resolve_config({"data_dir": "d"})  # the default backbone
    assert WEIGHTS_URLS["beit3-base"] in exc.value.hint and TOKENIZER_URL in exc.value.hint
    assert "--weights none" in exc.value.hint
    with pytest.raises(ConfigError, match="beit3-large"):
        resolve_config({"data_dir": "d", "backbone": "beit3-large-384"})
    assert resolve_config({"data_dir": "d", "weights": "none"}).weights == "none"  # on purpose
    assert resolve_config({"data_dir": "d", "backbone": "beit3-mini"}).weights is None  # bundled weights


def test_train_without_weights_stops_before_anything_is_written(tmp_path):
    from typer.testing import CliRunner

    from mwa_cli.cli import app

    res = CliRunner().invoke(app, ["train", str(tmp_path / "data"), "--method", "mwa", "--budget", "2h",
                                   "--out", str(tmp_path / "runs")])
    assert res.exit_code == 2, res.output
    assert "no pretrained weights for beit3-base" in " ".join(res.output.split())
    assert not (tmp_path / "runs").exists()


def test_train_help_shows_every_default_and_describes_every_option():
    from typer.testing import CliRunner

    from mwa_cli.cli import app

    text = " ".join(CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output.split())
    for shown in ("[default: mwa]", "[default: beit3-base]", "[default: runs]", "[default: 10]",
                  "Minutes between checkpoints"):
        assert shown in text, shown


def test_shell_completion_is_offered():
    from typer.testing import CliRunner

    from mwa_cli.cli import app

    text = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"}).output
    assert "--install-completion" in text and "--show-completion" in text
