"""Captions padded to their batch's bucket length: the widths, the cut, and unchanged embeddings (BEiT-3; the HF
backbones in test_hf_backbones.py), in training batches, the feature cache and evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mwa_cli.eval.embed import embed_texts
from mwa_cli.models.beit3 import BEiT3Retrieval
from mwa_cli.models.preprocess import to_pixels
from mwa_cli.models.presets import find_tokenizer
from mwa_cli.models.text_pad import bucket_length, bucket_lengths, padding_is_free, trim_padding
from mwa_cli.models.tokenizer import Beit3Tokenizer
from mwa_cli.resources import SAMPLE_DATA, package_file
from mwa_cli.train.data import PairTable, TrainBatches
from mwa_cli.train.feature_cache import fill_feature_cache

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CAPTIONS = ["a scratch", "a large scratch on the upper right of a brushed metal plate", "dent", "右上に大きな傷",
            "a thin crack near the left edge of the painted panel, about two centimetres long", "stain"]


def _tokenizer(max_len: int = 64) -> Beit3Tokenizer:
    return Beit3Tokenizer.from_file(find_tokenizer("beit3-mini", None, None), max_len=max_len)


def _model() -> BEiT3Retrieval:
    torch.manual_seed(0)
    cfg = {"img_size": 32, "patch_size": 8, "vocab_size": 64010, "embed_dim": 32, "depth": 2, "num_heads": 2,
           "ffn_dim": 64, "text_len": 64}
    return BEiT3Retrieval.from_config(cfg).eval()


@pytest.mark.parametrize("longest,cap,want", [(1, 64, 8), (8, 64, 8), (9, 64, 16), (20, 64, 24), (26, 64, 32),
                                              (33, 64, 40), (41, 64, 48), (64, 64, 64), (65, 128, 96), (97, 128, 128),
                                              (20, 16, 16), (70, 77, 77), (0, 64, 8)])
def test_bucket_lengths(longest, cap, want):
    assert bucket_length(longest, cap) == want


def test_the_widths_a_tokenizer_length_can_give():
    assert bucket_lengths(64) == [8, 16, 24, 32, 40, 48, 56, 64]
    assert bucket_lengths(77) == [8, 16, 24, 32, 40, 48, 56, 64, 77]
    assert bucket_lengths(12) == [8, 12]


def test_trim_cuts_columns_that_are_padding_in_every_row_only():
    ids, mask = _tokenizer().encode_batch(CAPTIONS)
    longest = int((mask == 0).sum(1).max())
    m, i = trim_padding(mask, ids)
    assert m.shape == i.shape == (6, bucket_length(longest, 64)) and m.shape[1] < 64
    assert torch.equal(i, ids[:, :m.shape[1]]) and bool(mask[:, m.shape[1]:].all())
    hidden = torch.randn(6, 64, 4)
    m2, h = trim_padding(mask, hidden)
    assert h.shape == (6, m.shape[1], 4) and torch.equal(h, hidden[:, :m.shape[1]])
    left = mask.flip(1)  # padding first: no trailing column is padding in every row, nothing is cut
    assert trim_padding(left, ids)[0].shape[1] == 64
    full = torch.zeros(2, 64, dtype=torch.long)
    assert trim_padding(full)[0].shape[1] == 64


def test_beit3_embeddings_of_bucketed_captions_equal_the_fixed_length_ones():
    model = _model()
    assert padding_is_free(model)
    ids, mask = _tokenizer().encode_batch(CAPTIONS)
    with torch.no_grad():
        fixed = model.encode_text(ids, mask)
    for batch_size in (2, 4, 6):  # each batch cut to its own bucket
        torch.testing.assert_close(embed_texts(model, ids, mask, device=torch.device("cpu"), batch_size=batch_size),
                                   fixed, atol=1e-6, rtol=1e-5)


def _pairs(tok: Beit3Tokenizer) -> PairTable:
    ids, mask = tok.encode_batch(CAPTIONS * 2)
    return PairTable(image_rows=np.repeat(np.arange(6), 2), input_ids=ids, padding_mask=mask,
                     flip_ok=np.ones(12, dtype=bool))


def test_training_batches_carry_bucketed_captions(tmp_path):
    pairs = _pairs(_tokenizer())
    cut = TrainBatches(pairs, tmp_path, 32, 6, 4, seed=0, load_images=False, trim_text=True)
    fixed = TrainBatches(pairs, tmp_path, 32, 6, 4, seed=0, load_images=False)
    widths = set()
    for step in range(6):
        b, f = cut[step], fixed[step]
        w = b["padding_mask"].shape[1]
        widths.add(w)
        longest = int((f["padding_mask"] == 0).sum(1).max())
        assert w == bucket_length(longest, 64) and f["padding_mask"].shape[1] == 64
        assert torch.equal(b["padding_mask"], f["padding_mask"][:, :w]) and bool(f["padding_mask"][:, w:].all())
    assert widths <= set(bucket_lengths(64)) and min(widths) < 64


def test_the_feature_cache_gives_the_states_of_the_bucketed_width_with_unchanged_embeddings():
    model = _model()
    tok = _tokenizer()
    pairs = _pairs(tok)
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    fc = fill_feature_cache(model, 1, images, pairs.image_rows, pairs.input_ids, pairs.padding_mask,
                            lambda u8: to_pixels(u8, 32), device=torch.device("cpu"), dtype=None, location="ram")
    index = torch.tensor([0, 2, 3, 5])
    mask, _ = trim_padding(pairs.padding_mask[index], pairs.input_ids[index])
    assert mask.shape[1] < 64
    inputs = fc.inputs({"index": index, "padding_mask": mask}, torch.device("cpu"))
    assert inputs["text_hidden"].shape == (4, mask.shape[1], 32)
    with torch.no_grad():
        got = model.encode_text_hidden(inputs["text_hidden"], mask, 1)
        want = model.encode_text(pairs.input_ids[index], pairs.padding_mask[index])
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def _text_lengths_bench():
    from tests.helpers.paths import REPO, load_script

    return load_script(REPO / "bench" / "text_lengths.py")


def test_the_lengths_bench_counts_batch_widths_as_the_trainer_pads_them():
    bench = _text_lengths_bench()
    lengths = np.array([10] * 120 + [30] * 8)  # 8 long captions among 128
    one = bench.batch_widths(lengths, 128, 64, epochs=2)
    assert one == {"batch": 128, "batches": 2, "fixed": 64, "longest_mean": 30.0, "bucketed_mean": 32.0,
                   "bucketed_widths": [32], "tokens_saved": 0.5}
    small = bench.batch_widths(lengths, 4, 64, epochs=3)
    assert small["batches"] == 96 and small["bucketed_widths"] == [16, 32] and 16 < small["bucketed_mean"] < 32
    captions = bench.read_captions(package_file(SAMPLE_DATA))  # a photo folder: every caption of captions.csv
    tok, label = bench.load_tokenizer("mini", 64, captions[:40], extend_vocab="off")
    got = bench.caption_lengths(captions[:3], tok)
    assert label == "beit3-mini" and got.tolist() == [len(tok.encode(c)) + 2 for c in captions[:3]]
