"""Retrieval metrics against an independent, plain reference (full score matrix + argsort) and hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mwa_cli.eval.metrics import PROTOCOL, retrieval_metrics, retrieval_ranks, topk_lists

KS = (1, 5, 10)


# --------------------------------------------------------------------------------------------------------------
# Reference: written plainly, no chunking, no counting trick. Valid when scores have no ties.
# --------------------------------------------------------------------------------------------------------------
def reference(scores: np.ndarray, cap2img: np.ndarray, labels=None) -> dict:
    n_img, n_txt = scores.shape
    i2t_ranks = []
    for i in range(n_img):
        order = np.argsort(-scores[i], kind="stable")  # caption indices, best first
        positions = [pos for pos, j in enumerate(order) if cap2img[j] == i]
        i2t_ranks.append(min(positions) + 1)
    t2i_ranks = []
    for j in range(n_txt):
        order = np.argsort(-scores[:, j], kind="stable")  # image indices, best first
        t2i_ranks.append(list(order).index(cap2img[j]) + 1)
    i2t_ranks = np.array(i2t_ranks)
    t2i_ranks = np.array(t2i_ranks)

    def direction(r):
        d = {f"r{k}": 100.0 * float(np.mean(r <= k)) for k in KS}
        d["median_rank"] = float(np.median(r))
        return d

    out = {"i2t": direction(i2t_ranks), "t2i": direction(t2i_ranks)}
    out["rsum"] = sum(out["i2t"][f"r{k}"] + out["t2i"][f"r{k}"] for k in KS)
    out["mean_recall"] = out["rsum"] / 6
    if labels is not None:
        out["per_label"] = {}
        for name in sorted(set(labels) - {""}):
            im = np.array([lab == name for lab in labels])
            cm = im[cap2img]
            li, lt = direction(i2t_ranks[im]), direction(t2i_ranks[cm])
            out["per_label"][name] = {
                "n_images": int(im.sum()),
                "n_captions": int(cm.sum()),
                "i2t": li,
                "t2i": lt,
                "rsum": sum(li[f"r{k}"] + lt[f"r{k}"] for k in KS),
            }
    out["_i2t_ranks"], out["_t2i_ranks"] = i2t_ranks, t2i_ranks
    return out


def as_embeddings(scores: np.ndarray):
    """Embeddings whose dot products are exactly `scores`: images = score rows, texts = identity."""
    n_img, n_txt = scores.shape
    return torch.tensor(scores, dtype=torch.float32), torch.eye(n_txt, dtype=torch.float32)


def random_case(rng, n_img, caps_per_image):
    counts = rng.integers(1, caps_per_image + 1, size=n_img)
    cap2img = np.repeat(np.arange(n_img), counts)
    rng.shuffle(cap2img)
    scores = rng.standard_normal((n_img, len(cap2img))).astype(np.float32)
    # make retrieval non-trivial but imperfect: boost positives a little
    scores[cap2img, np.arange(len(cap2img))] += 1.5
    return scores, cap2img


def assert_same(got: dict, ref: dict):
    for d in ("i2t", "t2i"):
        for key, val in ref[d].items():
            assert got[d][key] == pytest.approx(val), (d, key)
    assert got["rsum"] == pytest.approx(ref["rsum"])
    assert got["mean_recall"] == pytest.approx(ref["mean_recall"])


# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("chunk_size", [1, 3, 7, 32, 4096])
def test_random_scores_match_reference(seed, chunk_size):
    rng = np.random.default_rng(seed)
    scores, cap2img = random_case(rng, n_img=23, caps_per_image=5)
    labels = [["", "scratch", "dent", "rust"][i % 4] for i in range(23)]
    ref = reference(scores, cap2img, labels)
    img, txt = as_embeddings(scores)
    got = retrieval_metrics(img, txt, torch.tensor(cap2img), chunk_size=chunk_size, labels=labels)
    assert_same(got, ref)
    assert got["n_images"] == 23 and got["n_captions"] == len(cap2img)
    assert got["protocol"] == PROTOCOL
    assert set(got["per_label"]) == {"scratch", "dent", "rust"}  # empty label left out
    for name, ref_lab in ref["per_label"].items():
        g = got["per_label"][name]
        assert g["n_images"] == ref_lab["n_images"] and g["n_captions"] == ref_lab["n_captions"]
        assert_same({**g, "mean_recall": 0}, {**ref_lab, "mean_recall": 0})
    ranks = retrieval_ranks(img, txt, torch.tensor(cap2img), chunk_size=chunk_size)
    np.testing.assert_array_equal(ranks["i2t_ranks"].numpy(), ref["_i2t_ranks"])
    np.testing.assert_array_equal(ranks["t2i_ranks"].numpy(), ref["_t2i_ranks"])


@pytest.mark.parametrize("chunk_size", [5, 50, 4096])
def test_random_normalised_embeddings_match_reference(chunk_size):
    g = torch.Generator().manual_seed(3)
    n_img, d = 40, 16
    cap2img = torch.arange(n_img).repeat_interleave(3)[torch.randperm(n_img * 3, generator=g)]
    img = torch.nn.functional.normalize(torch.randn(n_img, d, generator=g), dim=1)
    txt = torch.nn.functional.normalize(img[cap2img] + 0.8 * torch.randn(len(cap2img), d, generator=g), dim=1)
    ref = reference((img @ txt.T).double().numpy(), cap2img.numpy())
    got = retrieval_metrics(img, txt, cap2img, chunk_size=chunk_size)
    assert_same(got, ref)
    assert 0 < got["rsum"] < 600  # a non-trivial case


def test_output_shape_is_eval_json_shape():
    img, txt = as_embeddings(np.eye(4, dtype=np.float32))
    got = retrieval_metrics(img, txt, torch.arange(4))
    assert set(got) == {"protocol", "n_images", "n_captions", "i2t", "t2i", "rsum", "mean_recall"}
    assert set(got["i2t"]) == {"r1", "r5", "r10", "median_rank"} == set(got["t2i"])
    assert all(isinstance(v, float) for v in got["i2t"].values())
    import json

    json.dumps(got)  # plain JSON types only


# --------------------------------------------------------------------------------------------------------------
# Hand-made cases with known answers
# --------------------------------------------------------------------------------------------------------------
def test_perfect_retrieval_is_100():
    # 3 images, 2 captions each; every caption points exactly at its image
    img = torch.eye(3)
    cap2img = torch.tensor([0, 0, 1, 1, 2, 2])
    txt = img[cap2img]
    got = retrieval_metrics(img, txt, cap2img, chunk_size=2)
    for d in ("i2t", "t2i"):
        assert got[d] == {"r1": 100.0, "r5": 100.0, "r10": 100.0, "median_rank": 1.0}
    assert got["rsum"] == 600.0 and got["mean_recall"] == 100.0


def test_known_rank():
    # 12 images, one caption each. For caption 0 (image 0), images 1..6 score higher: t2i rank 7.
    n = 12
    scores = np.eye(n, dtype=np.float32) * 10
    scores[0, 0] = 1.0
    scores[1:7, 0] = 2.0  # six images beat image 0 for caption 0
    got_r = retrieval_ranks(*as_embeddings(scores), torch.arange(n), chunk_size=5)
    assert got_r["t2i_ranks"][0] == 7
    assert got_r["t2i_ranks"][1:].tolist() == [1] * (n - 1)
    # image 0's best caption is caption 0 at score 1; captions of other images score 0 -> i2t rank 1
    assert got_r["i2t_ranks"].tolist() == [1] * n
    got = retrieval_metrics(*as_embeddings(scores), torch.arange(n), chunk_size=5)
    assert got["t2i"]["r1"] == pytest.approx(100 * 11 / 12)
    assert got["t2i"]["r5"] == pytest.approx(100 * 11 / 12)
    assert got["t2i"]["r10"] == 100.0
    assert got["t2i"]["median_rank"] == 1.0


def test_any_caption_counts_and_own_captions_do_not_push_down():
    # image 0 has captions 0,1,2; its best caption (2) is beaten only by its own other captions? no:
    # scores for image 0: cap0 0.9, cap1 0.8, cap2 0.1, cap3 (image 1) 0.85  -> best positive 0.9: rank 1
    # image 1: cap3 0.2, and image-0 captions score 0.5, 0.6, 0.7 -> rank 4
    scores = np.array([[0.9, 0.8, 0.1, 0.85], [0.5, 0.6, 0.7, 0.2]], dtype=np.float32)
    cap2img = torch.tensor([0, 0, 0, 1])
    r = retrieval_ranks(*as_embeddings(scores), cap2img, chunk_size=1)
    assert r["i2t_ranks"].tolist() == [1, 4]
    # t2i: cap0 -> image0 0.9 vs 0.5: 1; cap1: 0.8 vs 0.6: 1; cap2: 0.1 vs 0.7: 2; cap3: 0.2 vs 0.85: 2
    assert r["t2i_ranks"].tolist() == [1, 1, 2, 2]
    m = retrieval_metrics(*as_embeddings(scores), cap2img)
    assert m["i2t"]["r1"] == 50.0 and m["i2t"]["r5"] == 100.0
    assert m["i2t"]["median_rank"] == 2.5  # mean of the two middle ranks (1, 4)
    assert m["t2i"]["r1"] == 50.0 and m["t2i"]["median_rank"] == 1.5


def test_ties_count_in_the_querys_favour():
    # every score equal: no item scores STRICTLY higher than the positive, so every rank is 1
    scores = np.ones((5, 10), dtype=np.float32)
    cap2img = torch.arange(5).repeat_interleave(2)
    r = retrieval_ranks(*as_embeddings(scores), cap2img, chunk_size=3)
    assert r["i2t_ranks"].tolist() == [1] * 5
    assert r["t2i_ranks"].tolist() == [1] * 10
    # one negative strictly higher, one tied: rank 2
    img = torch.tensor([[0.5], [0.7], [0.5]])
    txt = torch.tensor([[1.0]])
    with pytest.raises(ValueError, match="no caption"):
        retrieval_ranks(img, txt, torch.tensor([0]))
    # same with every image captioned: captions 1, 2 belong to images 1, 2
    txt = torch.tensor([[1.0], [1.0], [1.0]])
    r = retrieval_ranks(img, txt, torch.tensor([0, 1, 2]))
    assert r["t2i_ranks"].tolist() == [2, 1, 2]  # image 0 (0.5) is beaten by image 1 (0.7), ties with image 2


def test_input_validation():
    with pytest.raises(ValueError, match="entries"):
        retrieval_metrics(torch.eye(3), torch.eye(3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="outside"):
        retrieval_metrics(torch.eye(3), torch.eye(3), torch.tensor([0, 1, 3]))
    with pytest.raises(ValueError, match="widths"):
        retrieval_metrics(torch.eye(3), torch.ones(3, 2), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="labels"):
        retrieval_metrics(torch.eye(3), torch.eye(3), torch.tensor([0, 1, 2]), labels=["a"])


def test_bf16_inputs_are_accepted():
    img = torch.eye(4, dtype=torch.bfloat16)
    got = retrieval_metrics(img, img, torch.arange(4))
    assert got["rsum"] == 600.0


# --------------------------------------------------------------------------------------------------------------
# top-k lists for eval_topk.json
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("chunk_size", [1, 4, 9, 4096])
def test_topk_lists_match_argsort(chunk_size):
    rng = np.random.default_rng(7)
    scores, cap2img = random_case(rng, n_img=15, caps_per_image=3)
    ids = [f"{i:016x}" for i in range(15)]
    out = topk_lists(*as_embeddings(scores), torch.tensor(cap2img), image_ids=ids, split="test",
                     k=10, chunk_size=chunk_size)
    assert out["split"] == "test"
    assert len(out["i2t"]) == 15 and len(out["t2i"]) == len(cap2img)
    for i, row in enumerate(out["i2t"]):
        assert row["image_id"] == ids[i]
        assert row["topk"] == list(np.argsort(-scores[i], kind="stable")[:10])
    for j, row in enumerate(out["t2i"]):
        assert row["caption_index"] == j
        assert row["topk"] == [ids[i] for i in np.argsort(-scores[:, j], kind="stable")[:10]]


def test_topk_lists_small_gallery_and_limits():
    scores = np.array([[0.9, 0.1, 0.3], [0.2, 0.8, 0.4]], dtype=np.float32)
    out = topk_lists(*as_embeddings(scores), torch.tensor([0, 1, 1]), image_ids=["a", "b"],
                     caption_indices=[10, 11, 12], k=10, chunk_size=1)
    assert out["i2t"][0] == {"image_id": "a", "topk": [10, 12, 11]}
    assert out["i2t"][1] == {"image_id": "b", "topk": [11, 12, 10]}
    assert out["t2i"][2] == {"caption_index": 12, "topk": ["b", "a"]}  # only 2 images exist
    limited = topk_lists(*as_embeddings(scores), torch.tensor([0, 1, 1]), image_ids=["a", "b"],
                         max_queries=1)
    assert len(limited["i2t"]) == 1 and len(limited["t2i"]) == 1
