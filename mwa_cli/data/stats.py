"""data_report.json: what the prepared dataset contains, and what the tokenizer will not understand."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from mwa_cli.resources import MINI_MODEL, package_path


def default_tokenizer_path() -> Path:
    """The built-in small model's SentencePiece model (present once the model core is installed)."""
    return package_path(MINI_MODEL, "tokenizer.spm")


def _spm_report(path: Path, texts: list[str], top: int = 20) -> dict:
    """Fallback when mwa_cli.models.tokenizer is unavailable: count <unk> pieces with sentencepiece directly."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(path))
    unk = sp.unk_id()
    per_text, chars, total = [], Counter(), 0
    for t in texts:
        ids = sp.encode(t)
        pieces = sp.encode(t, out_type=str)
        n = sum(1 for i in ids if i == unk)
        per_text.append(n)
        total += len(ids) + 2  # + <s> and </s>, as the model sees them
        for p, i in zip(pieces, ids):
            if i == unk:
                chars.update(ch for ch in p.replace("\u2581", "") if not ch.isspace())
    unknown = sum(per_text)
    return {"texts": len(texts), "tokens": total, "unknown_tokens": unknown,
            "unknown_fraction": unknown / total if total else 0.0,
            "texts_with_unknown": sum(1 for n in per_text if n), "per_text_unknown": per_text,
            "top_unknown_characters": chars.most_common(top)}


def tokenizer_coverage(texts: list[str], tokenizer: Path | None) -> dict:
    """{"status": "ok", "tokenizer": path, ...unknown_report...} or {"status": "skipped", "reason": ...}."""
    path = Path(tokenizer) if tokenizer else default_tokenizer_path()
    if not path.is_file():
        why = (f"no tokenizer model at {path}" if tokenizer else
               "the built-in model's tokenizer is not installed yet (pass --tokenizer PATH/beit3.spm)")
        return {"status": "skipped", "reason": why, "tokenizer": str(path)}
    try:
        try:
            from mwa_cli.models.tokenizer import Beit3Tokenizer
        except ImportError:
            Beit3Tokenizer = None  # noqa: N806
        if Beit3Tokenizer is not None:
            rep = dict(Beit3Tokenizer.from_file(path).unknown_report(texts))
        else:
            rep = _spm_report(path, texts)
    except Exception as exc:  # noqa: BLE001 - a bad tokenizer file must not stop prepare
        return {"status": "skipped", "reason": f"cannot use tokenizer {path}: {exc}", "tokenizer": str(path)}
    per = rep.pop("per_text_unknown", None)
    rep["top_unknown_characters"] = [[str(c), int(n)] for c, n in rep.get("top_unknown_characters", [])]
    if per is not None:
        rep["captions_with_unknown_examples"] = [t for t, n in zip(texts, per) if n][:5]
    return {"status": "ok", "tokenizer": str(path), **rep}


def _describe(values: Iterable[float]) -> dict:
    a = np.asarray(list(values), dtype=float)
    if a.size == 0:
        return {"min": 0, "mean": 0.0, "median": 0.0, "max": 0}
    return {"min": int(a.min()), "mean": round(float(a.mean()), 2), "median": float(np.median(a)),
            "max": int(a.max())}


def build_report(manifest: pd.DataFrame, rejected: pd.DataFrame, *, duplicates: list[list[str]],
                 duplicate_captions: int, multi_frame: list[str], notes: list[str], counts: dict,
                 tokenizer: dict, split_method: str) -> dict:
    per_image = manifest.groupby("image_id", sort=False).size()
    labels_per_split: dict[str, dict[str, int]] = {}
    imgs = manifest.drop_duplicates("image_id")
    for split in ("train", "val", "test"):
        sub = imgs[imgs["split"] == split]
        labels_per_split[split] = {str(k or "(none)"): int(v) for k, v in sub["label"].value_counts().sort_index().items()}
    lens = manifest["caption"].str.len()
    words = manifest["caption"].str.split().str.len()
    reasons = rejected["reason"].str.replace(r"'[^']*'", "'…'", regex=True).value_counts() if len(rejected) else pd.Series(dtype=int)
    return {
        "images": int(imgs.shape[0]),
        "captions": int(len(manifest)),
        "captions_per_image": _describe(per_image.values),
        "labels": {str(k or "(none)"): int(v) for k, v in imgs["label"].value_counts().sort_index().items()},
        "labels_per_split": labels_per_split,
        "split_method": split_method,
        "caption_length_chars": _describe(lens.values),
        "caption_length_words": _describe(words.values),
        "image_sizes": {"width": _describe(imgs["width"].values), "height": _describe(imgs["height"].values)},
        "duplicates_merged": {"images": sum(len(g) - 1 for g in duplicates), "groups": duplicates[:50],
                              "captions": int(duplicate_captions)},
        "multi_frame_first_frame_used": multi_frame,
        "rejected_by_reason": {str(k): int(v) for k, v in reasons.items()},
        "counts": counts,
        "notes": notes,
        "tokenizer_coverage": tokenizer,
    }
