"""`mwa eval` and the evaluation helpers on the tiny backbone (metrics themselves: tests/unit/eval/test_metrics.py)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from mwa_cli.cli import app
from mwa_cli.data.cache import ensure_cache
from mwa_cli.eval.embed import embed_images, embed_texts
from mwa_cli.eval.evaluate import evaluate_path, load_split
from mwa_cli.train.trainer import build_trainer


def test_load_split_groups_captions_by_image(train_data_dir):
    cache = ensure_cache(train_data_dir, 32, progress=False)
    sd = load_split(train_data_dir, "test", cache)
    assert sd.n_images == 4 and sd.n_captions == 8
    assert sd.text_to_image.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert sd.caption_indices == list(range(8))
    assert [cache.ids[r] for r in sd.image_rows] == sd.image_ids


def test_embeddings_do_not_depend_on_batch_size(train_data_dir):
    tr = build_trainer("beit3-tiny-test", "frozen", device="cpu")
    cache = ensure_cache(train_data_dir, 32, progress=False)
    rows = [5, 1, 3, 0, 2]
    a = embed_images(tr.model, cache.array, rows, image_size=32, device=torch.device("cpu"), batch_size=2)
    b = embed_images(tr.model, cache.array, rows, image_size=32, device=torch.device("cpu"), batch_size=64)
    assert a.shape == (5, 64) and torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(a.norm(dim=-1), torch.ones(5), atol=1e-4)
    ids = torch.randint(4, 40, (5, 32))
    mask = torch.zeros(5, 32, dtype=torch.long)
    mask[:, 10:] = 1
    ta = embed_texts(tr.model, ids, mask, device=torch.device("cpu"), batch_size=2)
    tb = embed_texts(tr.model, ids, mask, device=torch.device("cpu"), batch_size=64)
    assert torch.allclose(ta, tb, atol=1e-5)


def test_eval_run_reproduces_training_eval(small_nke_run):
    run = small_nke_run.run_dir
    trained = json.loads((run / "eval.json").read_text())
    result = evaluate_path(run, device="cpu")
    assert result["rsum"] == pytest.approx(trained["rsum"])
    assert result["i2t"] == pytest.approx(trained["i2t"]) and result["t2i"] == pytest.approx(trained["t2i"])
    written = json.loads((run / "eval.json").read_text())
    for key in ("split", "protocol", "n_images", "n_captions", "i2t", "t2i", "rsum", "mean_recall", "per_label",
                "method", "backbone", "dataset_hash", "seconds", "created"):
        assert key in written, key
    assert written["method"] == "nke" and written["split"] == "test"
    assert set(written["per_label"]) <= {"scratch", "dent", "stain", "crack"}


def test_eval_cli_json_val_split(small_nke_run):
    res = CliRunner().invoke(app, ["eval", str(small_nke_run.run_dir), "--split", "val", "--json",
                                   "--device", "cpu"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["split"] == "val" and out["n_images"] == 4 and 0 <= out["rsum"] <= 600


def test_eval_cli_zero_shot_backbone(train_data_dir, train_tokenizer):
    res = CliRunner().invoke(app, ["eval", str(train_data_dir), "--method", "frozen", "--backbone", "beit3-tiny-test",
                                   "--tokenizer", str(train_tokenizer), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "RSUM" in res.output


def test_eval_cli_clear_error_without_adapter(tmp_path):
    res = CliRunner().invoke(app, ["eval", str(tmp_path)])
    assert res.exit_code == 2
    assert "adapter_config.json" in " ".join(res.output.split())
