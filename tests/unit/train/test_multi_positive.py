"""Multi-positive contrastive targets (train/positives.py, train/loss.py) and the label-level evaluation protocol
(eval/label_level.py, metrics.group_retrieval_ranks), each against a direct computation written out here."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from mwa_cli.adapters.registry import recommended_lr
from mwa_cli.errors import ConfigError
from mwa_cli.eval.label_level import label_level_metrics, primary_protocol, protocol_groups
from mwa_cli.eval.metrics import group_retrieval_ranks, retrieval_ranks
from mwa_cli.train.loss import contrastive_loss, sigmoid_loss
from mwa_cli.train.positives import resolve_positives
from tests.helpers.paths import REPO


def _emb(n: int, d: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g), dim=1)


def _direct_multi_positive(img, txt, scale, groups):
    """Row by row: -mean over the row's positives of log softmax, both directions, averaged."""
    logits = scale * img @ txt.t()
    total = 0.0
    for lg in (logits, logits.t()):
        rows = []
        for i in range(lg.shape[0]):
            pos = [j for j in range(lg.shape[1]) if groups[j] == groups[i]]
            logp = lg[i] - torch.logsumexp(lg[i], 0)
            rows.append(-sum(logp[j] for j in pos) / len(pos))
        total = total + torch.stack(rows).mean()
    return total / 2


def test_loss_with_repeated_captions_equals_direct_multi_positive():
    img, txt = _emb(10, seed=1), _emb(10, seed=2)
    groups = torch.tensor([0, 1, 0, 2, 1, 0, 3, 4, 2, 0])
    scale = torch.tensor(math.log(1 / 0.07))
    got = contrastive_loss(img, txt, scale, groups)
    want = _direct_multi_positive(img, txt, scale.exp(), groups.tolist())
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # the identical-caption "negatives" are what the one-positive loss punished: it is higher here
    assert float(contrastive_loss(img, txt, scale)) != pytest.approx(float(got))


def test_loss_with_unique_groups_equals_the_one_positive_loss():
    img, txt = _emb(12, seed=3), _emb(12, seed=4)
    scale = torch.tensor(2.5, requires_grad=True)
    a = contrastive_loss(img, txt, scale)
    b = contrastive_loss(img, txt, scale, torch.arange(12))
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    bias = torch.tensor(-3.0)
    torch.testing.assert_close(sigmoid_loss(img, txt, scale, bias), sigmoid_loss(img, txt, scale, bias,
                                                                                 torch.arange(12)))


def test_sigmoid_loss_marks_every_same_group_pair_positive():
    img, txt = _emb(6, seed=5), _emb(6, seed=6)
    groups = torch.tensor([0, 0, 1, 1, 1, 2])
    scale, bias = torch.tensor(1.0), torch.tensor(-2.0)
    logits = img @ txt.t() * scale.exp() + bias
    z = torch.tensor([[1.0 if groups[i] == groups[j] else -1.0 for j in range(6)] for i in range(6)])
    want = -F.logsigmoid(z * logits).sum() / 6
    torch.testing.assert_close(sigmoid_loss(img, txt, scale, bias, groups), want)


def test_resolve_positives_auto_caption_label_off():
    caps = ["a photo of dent", "a photo of crack", "a photo of dent", "a dent"]
    labels = ["dent", "crack", "dent", "dent"]
    auto = resolve_positives("auto", caps, labels)
    assert auto.mode == "caption" and auto.groups.tolist() == [0, 1, 0, 2]
    assert auto.record() == {"requested": "auto", "mode": "caption", "pairs": 4, "distinct_captions": 3,
                             "groups": 3, "templated": False}
    assert resolve_positives("label", caps, labels).groups.tolist() == [0, 1, 0, 0]
    assert resolve_positives("off", caps, labels).groups is None
    unique = resolve_positives("auto", ["a", "b", "c"], ["x", "x", "y"])
    assert unique.mode == "off" and unique.groups is None


def test_templated_captions_get_their_own_default_rate_and_varied_ones_keep_theirs():
    """Class-folder templates (a few texts repeated over many pairs) switch beit3-mini's default rate; captions
    that merely repeat sometimes (sample_data: 79 % distinct) and unique ones keep the rate tuned on them."""
    templated = resolve_positives("auto", ["a photo of dent", "a photo of rust"] * 3, ["dent", "rust"] * 3)
    assert templated.templated and templated.record()["templated"] is True
    assert not resolve_positives("auto", ["a", "b", "c", "a"], None).templated  # 3 distinct of 4
    assert not resolve_positives("auto", ["a", "b"], None).templated
    captions = pd.read_csv(REPO / "mwa_cli" / "sample_data" / "captions.csv")
    en = list(captions[captions["lang"] == "en"]["caption"])
    assert not resolve_positives("auto", en, None).templated
    mini = "beit3-mini"
    assert recommended_lr(mini, "mwa", templated=True) < recommended_lr(mini, "mwa")
    assert recommended_lr(mini, "full-ft", templated=True) == recommended_lr(mini, "full-ft")
    assert recommended_lr("beit3-base", "mwa", templated=True) == recommended_lr("beit3-base", "mwa")


def test_positives_label_without_labels_is_a_clear_error():
    with pytest.raises(ConfigError, match="needs a label on every train pair; 1 of 2") as exc:
        resolve_positives("label", ["a", "b"], ["dent", ""])
    assert "--positives caption" in exc.value.hint
    with pytest.raises(ConfigError, match="unknown --positives mode"):
        resolve_positives("labels", ["a"], ["x"])


# ----------------------------------------------------------------------------- label-level metrics
def _reference_ranks(img, txt, match):
    """Brute force: rank = 1 + #non-matching items strictly above the best matching one, per query."""
    s = (img @ txt.t()).numpy()
    i2t = [1 + int(((s[i] > s[i][match[i]].max()) & ~match[i]).sum()) for i in range(s.shape[0])]
    t2i = [1 + int(((s[:, j] > s[:, j][match[:, j]].max()) & ~match[:, j]).sum()) for j in range(s.shape[1])]
    return i2t, t2i


@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_group_ranks_match_brute_force_for_labels_and_captions(chunk):
    labels = ["dent", "crack", "dent", "ok", "crack", "dent"]
    t2i = torch.tensor([0, 0, 1, 2, 3, 3, 4, 5])
    captions = ["a dent", "dent photo", "a crack", "a dent", "fine", "fine", "a crack", "dent photo"]
    img, txt = _emb(6, seed=7), _emb(8, seed=8)
    for key in ("label", "caption"):
        ig, tg = protocol_groups(key, labels, captions, t2i)
        if key == "label":
            match = np.array([[labels[i] == labels[int(t2i[j])] for j in range(8)] for i in range(6)])
        else:
            own = [{captions[j] for j in range(8) if int(t2i[j]) == i} for i in range(6)]
            match = np.array([[captions[j] in own[i] for j in range(8)] for i in range(6)])
        r = group_retrieval_ranks(img, txt, ig, tg, chunk_size=chunk)
        want_i2t, want_t2i = _reference_ranks(img, txt, match)
        assert r["i2t_ranks"].tolist() == want_i2t, key
        assert r["t2i_ranks"].tolist() == want_t2i, key


def test_group_ranks_with_instance_groups_equal_the_instance_ranks():
    t2i = torch.tensor([0, 0, 1, 2, 2, 2, 3])
    img, txt = _emb(4, seed=9), _emb(7, seed=10)
    a = retrieval_ranks(img, txt, t2i, chunk_size=2)
    b = group_retrieval_ranks(img, txt, torch.arange(4)[:, None], t2i, chunk_size=2)
    assert a["i2t_ranks"].tolist() == b["i2t_ranks"].tolist()
    assert a["t2i_ranks"].tolist() == b["t2i_ranks"].tolist()


def test_label_level_metrics_on_a_small_hand_checked_case():
    # 4 images (2 labels), one template caption each label: identical captions get identical embeddings
    labels = ["dent", "dent", "crack", "crack"]
    captions = ["a photo of dent", "a photo of dent", "a photo of crack", "a photo of crack"]
    t2i = torch.arange(4)
    img = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.8, 0.2]])  # the last crack photo looks like a dent
    txt = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    m = label_level_metrics(img, txt, t2i, labels=labels, captions=captions)
    assert m["key"] == "caption" and "identical" in m["protocol"].lower()
    assert label_level_metrics(img, txt, t2i, labels=labels, captions=captions, key="label")["i2t"] == m["i2t"]
    assert m["i2t"]["r1"] == pytest.approx(75.0)  # images 0, 1, 2 retrieve their label's caption first
    # caption "a photo of crack": best crack image (2, score 1.0) is top → both crack captions hit at 1;
    # dent captions: dent images score 1.0, 0.9 → hit at 1
    assert m["t2i"]["r1"] == pytest.approx(100.0)
    assert m["per_label"]["crack"]["i2t"]["r1"] == pytest.approx(50.0)
    assert m["per_label"]["dent"]["i2t"]["r1"] == pytest.approx(100.0)
    assert m["chance"]["i2t_r1"] == pytest.approx(50.0)
    assert m["per_label"]["crack"]["chance"]["i2t_r1"] == pytest.approx(50.0)
    assert m["rsum"] == pytest.approx(sum(m[d][f"r{k}"] for d in ("i2t", "t2i") for k in (1, 5, 10)))


def test_protocol_choice():
    assert primary_protocol(["x", "y", "x"]) == "label_level"
    assert primary_protocol(["x", "y"]) == "instance"


def test_caption_key_keeps_different_captions_of_a_label_apart():
    # captions.csv style: two images of one label with different descriptions; the caption key does not merge them
    labels = ["dent", "dent"]
    captions = ["a small dent on the left", "a large dent on the right"]
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    txt = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # swapped: every top-1 is the other image's caption
    by_caption = label_level_metrics(img, txt, torch.arange(2), labels=labels, captions=captions)
    by_label = label_level_metrics(img, txt, torch.arange(2), labels=labels, captions=captions, key="label")
    assert by_caption["i2t"]["r1"] == 0.0 and by_label["i2t"]["r1"] == 100.0
    assert by_caption["per_label"]["dent"]["chance"]["i2t_r1"] == pytest.approx(50.0)
    with pytest.raises(ValueError, match="label key needs a label"):
        label_level_metrics(img, txt, torch.arange(2), labels=["dent", ""], captions=captions, key="label")


def test_group_ranks_refuse_a_query_without_a_match():
    with pytest.raises(ValueError, match="at least one matching"):
        group_retrieval_ranks(_emb(2), _emb(2), torch.tensor([[0], [1]]), torch.tensor([0, 0]))


def test_collapse_watch_speaks_once_after_the_loss_sits_at_log_batch():
    from mwa_cli.train.collapse import CollapseWatch

    w = CollapseWatch(32, after_step=10, lr=2e-2)
    flat = math.log(32)
    assert w.observe(5, flat) is None  # warm-up
    assert [w.observe(s, v) for s, v in ((20, flat), (30, 2.0), (40, flat), (50, flat + 0.005))] == [None] * 4
    note = w.observe(60, flat - 0.005)
    assert note and "collapsed" in note and "--lr" in note and "0.002" in note
    assert w.observe(70, flat) is None  # once
    healthy = CollapseWatch(32, after_step=0, lr=1e-3)
    assert all(healthy.observe(s, 1.2) is None for s in range(1, 20))
    learning = CollapseWatch(32, after_step=0, lr=2e-3)  # a class-folder run at 28 %: near log 32, not on it
    assert all(learning.observe(s, v) is None for s, v in enumerate([3.427, 3.469, 3.431, 3.41, 3.421, 3.419]))
