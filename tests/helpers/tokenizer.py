"""A tiny sentencepiece model trained on the words of the trainer's fake captions."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.data_dir import TRAIN_COLORS, TRAIN_SHAPES


def make_train_tokenizer(path: Path) -> Path:
    """A tiny sentencepiece model (ids well inside beit3-tiny-test's vocabulary) for trainer tests."""
    import sentencepiece as spm

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    corpus = path.with_suffix(".txt")
    lines = []
    for i in range(60):
        for c in TRAIN_COLORS:
            for s in TRAIN_SHAPES:
                lines.append(f"a {c} {s} on a steel plate number {i} mark on the left right 左に の")
    corpus.write_text("\n".join(lines), encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(path.with_suffix("")), vocab_size=48, hard_vocab_limit=False,
                                   character_coverage=1.0, model_type="unigram", minloglevel=2)
    return path.with_suffix(".model")
