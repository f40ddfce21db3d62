"""Feature cache: training from the frozen layers' cached output equals training through them."""

from __future__ import annotations

import json

import pytest
import torch

from mwa_cli.errors import ConfigError
from mwa_cli.models.preprocess import to_pixels
from mwa_cli.train.config import TrainConfig
from mwa_cli.train.feature_cache import choose_location, fill_feature_cache
from mwa_cli.train.loop import train
from mwa_cli.train.trainer import build_trainer
from tests.helpers.dist_cache_worker import cache_pairs as _pairs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _trainer(**kw):
    opts = {"layers": "top-1", "dropout": 0.0}
    return build_trainer("beit3-tiny-test", "mwa", method_options=opts, device="cpu", precision="fp32",
                         drop_path=0.0, lr=5e-3, total_steps=10, seed=0, **kw)


def test_training_from_the_cache_equals_training_through_the_frozen_layers():
    images, rows, ids, mask = _pairs()
    size = 32
    plain, cached = _trainer(), _trainer()
    k = cached.applied.lowest_trainable_layer
    assert k == 1
    fc = fill_feature_cache(cached.model, k, images, rows, ids, mask, lambda u8: to_pixels(u8, size),
                            device=torch.device("cpu"), dtype=None, location="ram", batch_size=5)
    cached.use_feature_cache(k)
    assert fc.images.shape == (6, 1 + (size // 8) ** 2, 64) and fc.captions.shape == (12, 12, 64)
    for step in range(3):
        index = torch.tensor([(step * 5 + j) % 12 for j in range(8)])
        batch_plain = {"pixels": to_pixels(torch.from_numpy(images[rows[index.numpy()]]), size),
                       "input_ids": ids[index], "padding_mask": mask[index]}
        loss_plain = plain.step(batch_plain)
        loss_cached = cached.step(fc.inputs({"index": index, "padding_mask": mask[index]},
                                            torch.device("cpu")))
        torch.testing.assert_close(loss_cached, loss_plain, rtol=1e-6, atol=1e-6)
    for (name, p), (_, q) in zip(plain.model.named_parameters(), cached.model.named_parameters()):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6, msg=name)
    moved = [n for n, p in cached.model.named_parameters() if p.requires_grad]
    assert moved and all(".layers.1." in n or "logit_scale" in n for n in moved)


def test_disk_cache_is_a_memory_map_removed_on_close(tmp_path):
    images, rows, ids, mask = _pairs()
    tr = _trainer()
    fc = fill_feature_cache(tr.model, 1, images, rows, ids, mask, lambda u8: to_pixels(u8, 32),
                            device=torch.device("cpu"), dtype=torch.bfloat16, location="disk", folder=tmp_path)
    assert fc.location == "disk" and fc.images.dtype == torch.bfloat16
    assert {f.name for f in tmp_path.iterdir()} == {"feature_cache_images.npy", "feature_cache_captions.npy"}
    ram = fill_feature_cache(tr.model, 1, images, rows, ids, mask, lambda u8: to_pixels(u8, 32),
                             device=torch.device("cpu"), dtype=torch.bfloat16, location="ram")
    assert torch.equal(fc.images, ram.images) and torch.equal(fc.captions, ram.captions)
    out = fc.inputs({"index": torch.tensor([3, 0]), "padding_mask": mask[[3, 0]]}, torch.device("cpu"))
    assert torch.equal(out["image_hidden"], ram.images[[1, 0]]) and torch.equal(out["text_hidden"], ram.captions[[3, 0]])
    fc.close()
    assert list(tmp_path.iterdir()) == []


def test_location_choice_and_refusals():
    cpu = torch.device("cpu")
    assert choose_location("auto", 1024, cpu) == "ram"
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        choose_location("gpu", 1024, cpu)
    with pytest.raises(ConfigError, match="available"):
        choose_location("ram", 1 << 62, cpu)
    tr = _trainer()
    with pytest.raises(ConfigError, match="frozen layers below"):
        fill_feature_cache(tr.model, 0, *_pairs(), lambda u8: u8, device=cpu, dtype=None)


def test_flip_on_with_feature_cache_is_refused():
    with pytest.raises(ConfigError, match="--flip on"):
        TrainConfig(data_dir="x", feature_cache="auto", flip="on").validate()
    with pytest.raises(ConfigError, match="unknown --feature-cache"):
        TrainConfig(data_dir="x", feature_cache="yes").validate()


def _cfg(data_dir, tok, out, name, **kw) -> TrainConfig:
    base = dict(data_dir=str(data_dir), backbone="beit3-tiny-test", tokenizer=str(tok), out=str(out), name=name,
                method="mwa", steps=6, batch_size=8, lr=1e-3, seed=0, log_every=2, val_evals=1, workers=0)
    base.update(kw)
    return TrainConfig(**base)


def test_train_with_feature_cache_records_it(train_data_dir, train_tokenizer, tmp_path):
    res = train(_cfg(train_data_dir, train_tokenizer, tmp_path, "fc", feature_cache="auto",
                     method_options={"layers": "top-1"}))
    assert res.status == "completed" and res.steps == 6
    timing = json.loads((res.run_dir / "timing.json").read_text())
    fc = timing["feature_cache"]
    assert fc["start_layer"] == 1 and fc["location"] == "ram" and fc["images"] > 0 and fc["captions"] >= fc["images"]
    assert json.loads((res.run_dir / "config.json").read_text())["feature_cache"] == "auto"
    assert not list(res.run_dir.glob("feature_cache_*"))


def test_feature_cache_with_adapters_in_every_layer_is_refused_before_anything_is_written(
        train_data_dir, train_tokenizer, tmp_path):
    with pytest.raises(ConfigError, match="frozen layers below the adapters") as exc:
        train(_cfg(train_data_dir, train_tokenizer, tmp_path, "all", feature_cache="auto"))
    assert "layers=top-" in exc.value.hint
    assert not (tmp_path / "all").exists()
