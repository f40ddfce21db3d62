"""Bootstrap intervals over test images from per-query ranks, checked against a direct computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mwa_cli.eval.bootstrap import (
    QueryRanks,
    bootstrap,
    images_to_separate,
    load_ranks,
    paired_difference,
    point_metrics,
    save_ranks,
)
from mwa_cli.eval.metrics import retrieval_metrics


def _ranks(n_images: int, caps: int = 2, seed: int = 0, good: float = 0.6) -> QueryRanks:
    rng = np.random.default_rng(seed)
    t2i = np.repeat(np.arange(n_images), caps)
    i2t = np.where(rng.random(n_images) < good, 1, rng.integers(2, 30, n_images))
    t2i_r = np.where(rng.random(t2i.size) < good, 1, rng.integers(2, 30, t2i.size))
    return QueryRanks(i2t, t2i_r, t2i)


def _direct(r: QueryRanks, images: np.ndarray) -> float:
    """RSUM of one resample by listing its queries one by one (an image drawn twice counts twice)."""
    i2t = [r.i2t[i] for i in images]
    t2i = [r.t2i[j] for i in images for j in np.flatnonzero(r.text_to_image == i)]
    return sum(100.0 * np.mean(np.array(q) <= k) for q in (i2t, t2i) for k in (1, 5, 10))


def test_matches_a_direct_computation_of_each_resample():
    r = _ranks(9, caps=3, seed=1)
    res = bootstrap(r, resamples=200, seed=7)
    idx = np.random.default_rng(7).integers(0, 9, size=(200, 9))  # the documented resampling: same seed, same draws
    direct = np.array([_direct(r, row) for row in idx])
    lo, hi = np.percentile(direct, [2.5, 97.5])
    assert res["ci95"]["rsum"] == pytest.approx([lo, hi])
    assert res["value"]["rsum"] == pytest.approx(_direct(r, np.arange(9)))
    assert (res["resamples"], res["seed"], res["n_images"]) == (200, 7, 9)


def test_point_metrics_equal_eval_json_figures():
    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(12, 8, generator=g), dim=1)
    t2i = torch.arange(12).repeat_interleave(2)
    txt = torch.nn.functional.normalize(img[t2i] + 0.8 * torch.randn(24, 8, generator=g), dim=1)
    ranks: dict = {}
    m = retrieval_metrics(img, txt, t2i, ranks_out=ranks)
    qr = QueryRanks(ranks["i2t_ranks"].numpy(), ranks["t2i_ranks"].numpy(), t2i.numpy())
    p = point_metrics(qr)
    assert p["rsum"] == pytest.approx(m["rsum"])
    assert p["i2t_r5"] == pytest.approx(m["i2t"]["r5"]) and p["t2i_r1"] == pytest.approx(m["t2i"]["r1"])


def test_interval_shrinks_with_more_images():
    small = bootstrap(_ranks(25, seed=3), resamples=1000)
    large = bootstrap(_ranks(400, seed=3), resamples=1000)
    w = lambda res: res["ci95"]["rsum"][1] - res["ci95"]["rsum"][0]  # noqa: E731
    assert w(large) < 0.5 * w(small)  # 16× the images: about a quarter of the width


def test_paired_interval_is_narrower_when_runs_agree():
    a = _ranks(60, seed=5)
    b_i2t, b_t2i = a.i2t.copy(), a.t2i.copy()
    b_i2t[:4] = 40  # b misses a few queries a gets right; otherwise the same
    b = QueryRanks(b_i2t, b_t2i, a.text_to_image)
    paired = paired_difference(a, b, resamples=1000, seed=1)
    # unpaired: the two runs resampled independently
    ua, ub = bootstrap(a, resamples=1000, seed=1), bootstrap(b, resamples=1000, seed=2)
    unpaired_w = np.hypot(*(r["ci95"]["rsum"][1] - r["ci95"]["rsum"][0] for r in (ua, ub)))
    pw = paired["ci95"]["rsum"][1] - paired["ci95"]["rsum"][0]
    assert pw < 0.5 * unpaired_w
    assert paired["value"]["rsum"] == pytest.approx(point_metrics(a)["rsum"] - point_metrics(b)["rsum"])
    assert paired["ci95"]["rsum"][0] >= 0  # b is never better: no resample can favour it


def test_paired_difference_needs_the_same_test_set():
    with pytest.raises(ValueError, match="same test images"):
        paired_difference(_ranks(10), _ranks(11))


def test_images_to_separate():
    assert images_to_separate(2.0, 2.0, 44) == 170  # 44 × (1.96·2/2)² = 169.03 → 170 (the 1/√N law)
    assert images_to_separate(10.0, 1.0, 44) == 44  # already separated
    assert images_to_separate(0.0, 1.0, 44) is None


def test_ranks_file_round_trip_and_bad_file(tmp_path):
    r = _ranks(5)
    save_ranks(tmp_path, "test", r)
    split, back = load_ranks(tmp_path)
    assert split == "test" and np.array_equal(back.t2i, r.t2i) and np.array_equal(back.i2t, r.i2t)
    (tmp_path / "eval_ranks.json").write_text('{"i2t_ranks": [1], "t2i_ranks": [1, 2], "text_to_image": [0, 3]}')
    assert load_ranks(tmp_path) is None  # unreadable: no interval rather than a wrong one
    assert load_ranks(tmp_path / "missing") is None


def test_training_and_mwa_eval_write_ranks_that_reproduce_eval_json(train_data_dir, train_tokenizer, tmp_path):
    import json

    from mwa_cli.eval.evaluate import evaluate_path
    from mwa_cli.train.config import TrainConfig
    from mwa_cli.train.loop import train

    torch.set_num_threads(1)
    res = train(TrainConfig(data_dir=str(train_data_dir), backbone="beit3-tiny-test", tokenizer=str(train_tokenizer),
                            method="nke", steps=3, batch_size=8, val_evals=0, out=str(tmp_path), name="r",
                            workers=0))
    for source in ("training", "mwa eval"):
        if source == "mwa eval":
            (res.run_dir / "eval_ranks.json").unlink()
            evaluate_path(res.run_dir, device="cpu")
        ev = json.loads((res.run_dir / "eval.json").read_text())
        split, ranks = load_ranks(res.run_dir)
        p = point_metrics(ranks)
        assert split == ev["split"] and ranks.n_images == ev["n_images"] and ranks.t2i.size == ev["n_captions"]
        assert p["rsum"] == pytest.approx(ev["rsum"]) and p["t2i_r5"] == pytest.approx(ev["t2i"]["r5"]), source
