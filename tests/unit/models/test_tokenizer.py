"""BEiT-3 tokenizer: exact ids against the original slow XLMRobertaTokenizer, and unknown-token accounting."""

from __future__ import annotations

import json

import pytest

from mwa_cli.errors import ConfigError
from mwa_cli.models.tokenizer import UNK_ID, Beit3Tokenizer


@pytest.fixture(scope="module")
def beit3_tok(shared_dir):
    return Beit3Tokenizer.from_file(shared_dir / "tokenizers" / "beit3.spm", max_len=64)


def test_reproduces_golden_ids_and_masks(beit3_tok, shared_dir):
    golden = json.loads((shared_dir / "fixtures" / "beit3_tokenizer_golden.json").read_text())
    assert golden["rows"], "golden file holds rows"
    for row in golden["rows"]:
        ids, mask = beit3_tok.format_ids(beit3_tok.encode(row["text"]))
        assert ids == row["input_ids"], row["text"]
        assert mask == row["padding_mask"], row["text"]
    assert beit3_tok.base_vocab_size == golden["vocab_len"]


def test_batch_shapes_and_truncation(beit3_tok):
    ids, mask = beit3_tok.encode_batch(["a dent", "scratch " * 200, ""])
    assert ids.shape == mask.shape == (3, 64)
    assert ids[1, -1].item() == 2 and mask[1].sum().item() == 0  # truncated to 62 + <s> </s>
    assert ids[2, :2].tolist() == [0, 2] and mask[2].sum().item() == 62


def test_unknown_report_counts_japanese_kanji(beit3_tok):
    report = beit3_tok.unknown_report(["傷 へこみ 汚れ 穴 欠け 変色 異物 ずれ", "a scratch"])
    assert report["tokens"] == 22 + len(beit3_tok.encode("a scratch"))
    assert report["per_text_unknown"] == [7, 0]
    chars = {c for c, _ in report["top_unknown_characters"]}
    assert {"傷", "穴", "汚", "欠"} <= chars


def test_added_tokens_take_precedence(beit3_tok):
    base = beit3_tok.base_vocab_size
    tok = Beit3Tokenizer(beit3_tok.sp, max_len=16, added_tokens={"傷": base, "穴": base + 1})
    ids = tok.encode("左上に傷と穴")
    assert base in ids and base + 1 in ids
    assert tok.vocab_size == base + 2
    assert UNK_ID in ids  # 左 is still unknown


def test_missing_model_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="tokenizer model not found"):
        Beit3Tokenizer.from_file(tmp_path / "nope.spm")
    bad = tmp_path / "bad.spm"
    bad.write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="not a sentencepiece model"):
        Beit3Tokenizer.from_file(bad)
