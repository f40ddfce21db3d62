"""The zero-shot cache: the untrained backbone evaluated once per data set, keyed by everything that decides it,
reused by `mwa report` without a frozen run, refused when the weights are not the runs' own."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from safetensors.torch import save_file

from mwa_cli.errors import MwaError
from mwa_cli.eval import zero_shot as zs
from mwa_cli.eval.evaluate import evaluate_target
from mwa_cli.models.presets import build_backbone
from mwa_cli.report.api import make_report
from mwa_cli.train.config import TrainConfig
from mwa_cli.train.loop import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def weighted_run(train_data_dir, train_tokenizer, tmp_path_factory):
    """A finished mwa run of beit3-tiny-test started from a weights file (so its sha256 is recorded)."""
    root = tmp_path_factory.mktemp("zero_shot")
    model, _ = build_backbone("beit3-tiny-test")
    weights = root / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    res = train(TrainConfig(data_dir=str(train_data_dir), backbone="beit3-tiny-test", weights=str(weights),
                            tokenizer=str(train_tokenizer), method="mwa", steps=2, batch_size=8, val_evals=0,
                            workers=0, device="cpu", out=str(root / "runs"), name="mwa"))
    assert res.status == "completed", res.message
    return res.run_dir, weights


def _configs(run_dir):
    return (json.loads((run_dir / "config.json").read_text()),
            json.loads((run_dir / "adapter_config.json").read_text()))


def test_evaluated_once_then_read_from_the_cache(weighted_run, train_data_dir, monkeypatch):
    run_dir, weights = weighted_run
    cfg, adapter = _configs(run_dir)
    key = zs.key_for(cfg, adapter, "test")
    zs.cache_file(train_data_dir, key).unlink(missing_ok=True)
    first = zs.ensure(train_data_dir, cfg, adapter, "test", device="cpu")
    assert first.source == "evaluated" and first.path == zs.cache_file(train_data_dir, key) and first.path.is_file()
    frozen, _, _, _ = evaluate_target(None, data_dir=train_data_dir, split="test", device="cpu", method="frozen",
                                      backbone="beit3-tiny-test", weights=str(weights), tokenizer=cfg["tokenizer"])
    assert first.eval["rsum"] == frozen["rsum"] and first.eval["method"] == "frozen"
    assert first.ranks is not None and first.ranks.label_level is not None

    def no_evaluation(*args, **kwargs):
        raise AssertionError("the cached figures must be used")

    monkeypatch.setattr("mwa_cli.eval.evaluate.evaluate_target", no_evaluation)
    again = zs.ensure(train_data_dir, cfg, adapter, "test", device="cpu")
    assert again.source == "cache" and again.eval == first.eval
    assert again.ranks.to_dict() == first.ranks.to_dict()


def test_the_key_holds_everything_that_decides_the_figures(weighted_run):
    cfg, adapter = _configs(weighted_run[0])
    key = zs.key_for(cfg, adapter, "test")
    assert key.weights_sha256 == cfg["backbone_info"]["weights_sha256"] and key.img_size == 32 and key.text_len == 32
    changed = [replace(key, split="val"), replace(key, dataset_hash="0" * 64), replace(key, img_size=64),
               replace(key, tokenizer_sha256="x"), replace(key, weights_sha256="y"), replace(key, backbone="b")]
    assert len({k.digest() for k in [key, *changed]}) == 7
    with pytest.raises(ValueError, match="no pretrained weights recorded"):
        zs.key_for(dict(cfg, backbone_info={"name": "beit3-tiny-test", "weights_sha256": None}), adapter, "test")
    with pytest.raises(ValueError, match="tokenizer .* is not there"):
        zs.key_for(dict(cfg, tokenizer="/nonexistent/tok.model"), adapter, "test")
    with pytest.raises(ValueError, match="image size"):
        zs.key_for(cfg, None, "test")


def test_other_weights_are_refused_and_a_broken_entry_is_evaluated_again(weighted_run, train_data_dir, tmp_path):
    run_dir, weights = weighted_run
    cfg, adapter = _configs(run_dir)
    key = zs.key_for(cfg, adapter, "test")
    path = zs.cache_file(train_data_dir, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{ half written", encoding="utf-8")
    assert zs.load(train_data_dir, key) is None
    assert zs.ensure(train_data_dir, cfg, adapter, "test", device="cpu").source == "evaluated"
    path.unlink()
    model, _ = build_backbone("beit3-tiny-test", drop_path=0.0)
    other = tmp_path / "other.safetensors"
    save_file({k: (v + 1.0).contiguous() for k, v in model.state_dict().items()}, str(other))
    with pytest.raises(MwaError, match="not the ones the runs were trained from"):
        zs.ensure(train_data_dir, dict(cfg, weights=str(other)), adapter, "test", device="cpu")
    assert not path.exists()  # nothing cached for the wrong weights


def test_the_report_shows_the_zero_shot_row_without_a_frozen_run(weighted_run):
    run_dir, _ = weighted_run
    rep = make_report([run_dir], write=False, compare="full-ft")
    zero = rep["references"]["zero_shot"]
    assert zero["source"] in ("evaluated", "cache") and not zero["shown_as_run"]
    assert zero["by_protocol"]["instance"]["rsum"] >= 0 and zero["recall_ci"]["n_images"] == 4
    off = make_report([run_dir], write=False, compare="full-ft", zero_shot=False)  # only what is cached
    assert off["references"]["zero_shot"] == dict(zero, source="cache")
