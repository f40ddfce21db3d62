"""Chance level of retrieval: exact hit probabilities of a random ranking, per protocol and direction, its range, and
eval.json carrying both protocols' chance; the label that answers each query (collapse evidence)."""

from __future__ import annotations

import itertools
import json
from math import comb

import numpy as np
import pytest
import torch

from mwa_cli.eval.chance import chance_recalls, hit_probability, instance_chance
from mwa_cli.eval.label_level import label_level_metrics, level_chance, protocol_groups, top_answers


def brute_force_hit(matches: int, candidates: int, k: int) -> float:
    """Share of all K-subsets of the candidates holding at least one of the `matches` items."""
    subsets = list(itertools.combinations(range(candidates), min(k, candidates)))
    return sum(any(i < matches for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("matches,candidates,k", [(1, 6, 1), (2, 7, 3), (3, 8, 5), (1, 4, 10), (4, 9, 2), (0, 5, 3)])
def test_hit_probability_is_the_exact_share_of_random_top_k(matches, candidates, k):
    assert hit_probability(np.array([matches]), candidates, k)[0] == pytest.approx(
        brute_force_hit(matches, candidates, k))


def test_instance_chance_is_about_k_over_candidates():
    # 4 images with 2 captions each: an image query has 2 of 8 captions, a caption query 1 of 4 images
    c = instance_chance([0, 0, 1, 1, 2, 2, 3, 3])
    assert c["i2t"]["r1"] == pytest.approx(25.0) and c["t2i"]["r1"] == pytest.approx(25.0)
    assert c["i2t"]["r5"] == pytest.approx(100 * (1 - comb(6, 5) / comb(8, 5)))
    assert c["t2i"]["r5"] == c["t2i"]["r10"] == 100.0  # 5 ≥ the 4 candidates
    assert c["rsum"] == pytest.approx(sum(c["i2t"].values()) + sum(c["t2i"].values()))
    big = instance_chance(list(range(1000)))  # one caption per image: R@K = K / 1000
    assert big["i2t"]["r10"] == pytest.approx(1.0) and big["t2i"]["r5"] == pytest.approx(0.5)


def test_label_level_chance_follows_the_label_frequencies():
    # labels a, a, a, b (one caption each, the label as the caption): a query of "a" has 3 of 4 matches
    labels = ["a", "a", "a", "b"]
    groups = protocol_groups("caption", labels, labels, torch.arange(4))
    c = level_chance(*groups)
    assert c["i2t_r1"] == c["i2t"]["r1"] == pytest.approx(100 * (3 / 4 * 3 / 4 + 1 / 4 * 1 / 4))
    assert c["t2i"]["r1"] == pytest.approx(c["i2t"]["r1"])
    assert set(c) >= {"i2t", "t2i", "rsum", "rsum_ci95"}


def test_the_chance_range_holds_random_models():
    rng = np.random.default_rng(0)
    n_img, t2i = 20, np.repeat(np.arange(20), 2)
    c = instance_chance(t2i)
    lo, hi = c["rsum_ci95"]
    inside = 0
    trials = 400
    for _ in range(trials):
        scores = rng.random((n_img, t2i.size))
        i2t_rank = [1 + int((scores[i][t2i != i] > scores[i][t2i == i].max()).sum()) for i in range(n_img)]
        t2i_rank = [1 + int((scores[:, j] > scores[t2i[j], j]).sum()) for j in range(t2i.size)]
        rsum = sum(100 * np.mean(np.array(r) <= k) for r in (i2t_rank, t2i_rank) for k in (1, 5, 10))
        inside += lo <= rsum <= hi
    assert 0.94 <= inside / trials <= 1.0  # at least 95 % (the directions' spreads add: an upper bound)
    assert chance_recalls(np.ones(3), 3, np.ones(3), 3)["rsum"] == pytest.approx(2 * (100 / 3 + 200))


def test_top_answers_name_the_label_that_answers_most_queries():
    emb = torch.nn.functional.normalize(torch.tensor([[1.0, 0.1], [1.0, 0.2], [1.0, -0.1], [0.9, 0.5]]), dim=1)
    text = torch.tensor([[1.0, 0.0]] * 4)  # every caption points the same way: one label answers everything
    labels, captions = ["x", "y", "z", "x"], ["a x", "a y", "a z", "a x"]
    m = label_level_metrics(emb, text, torch.arange(4), labels=labels, captions=captions)
    assert m["top_answers"]["i2t"][0][1] >= 50.0
    assert top_answers(["x", "x", "y", "z"]) == [["x", 50.0], ["y", 25.0], ["z", 25.0]]


def test_eval_json_carries_the_chance_of_both_protocols(small_nke_run):
    ev = json.loads((small_nke_run.run_dir / "eval.json").read_text())
    for chance in (ev["chance"], ev["label_level"]["chance"]):
        assert set(chance["i2t"]) == {"r1", "r5", "r10"} and chance["rsum_ci95"][0] <= chance["rsum"]
    n_img = ev["n_images"]  # 4 test images, 2 captions each
    assert ev["chance"]["t2i"]["r1"] == pytest.approx(100.0 / n_img)
    assert ev["label_level"]["chance"]["i2t_r1"] == ev["label_level"]["chance"]["i2t"]["r1"]
    assert ev["backbone_weights_sha256"] is None  # beit3-tiny-test: random weights, none recorded
