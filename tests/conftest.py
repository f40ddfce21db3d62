"""Shared test fixtures. Reference files come from ../shared beside the checkout (never copied here)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared (reference fixtures and beit3.spm); tests that need it skip with the reason when absent."""
    if not (SHARED / "fixtures").is_dir():
        pytest.skip(f"reference fixtures not found at {SHARED} (CI lays ../shared beside the checkout)")
    return SHARED


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread, like the subprocesses (OMP_NUM_THREADS=1): fast on a busy 2-core box, and the same
    reduction order in every process, which bit-exact comparisons rely on. Use with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------- train_ fixtures (trainer tests)
TRAIN_COLORS = ["red", "green", "blue", "yellow", "white", "black"]
TRAIN_SHAPES = ["scratch", "dent", "stain", "crack"]


def train_make_data_dir(root: Path, *, n_images: int = 24, size: int = 32, seed: int = 0) -> Path:
    """A tiny prepared data dir written by hand to docs/formats.md (manifest, dataset.json, image cache)."""
    import hashlib
    import json

    import numpy as np
    import pandas as pd

    root = Path(root)
    (root / "cache").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows, ids, arrays = [], [], []
    splits = ["train"] * (n_images - 8) + ["val"] * 4 + ["test"] * 4
    for i in range(n_images):
        color = TRAIN_COLORS[i % len(TRAIN_COLORS)]
        shape = TRAIN_SHAPES[(i // len(TRAIN_COLORS)) % len(TRAIN_SHAPES)]
        img = (rng.random((size, size, 3)) * 60).astype(np.uint8)
        base = np.array([(i * 37) % 256, (i * 91) % 256, (i * 53) % 256], dtype=np.uint8)
        x0 = (i * 5) % (size // 2)
        img[4:4 + size // 2, x0:x0 + size // 2] = base
        image_id = hashlib.sha256(img.tobytes()).hexdigest()[:16]
        ids.append(image_id)
        arrays.append(img)
        side = "left" if x0 < size // 4 else "right"
        caps = [f"a {color} {shape} on a steel plate number {i}",
                f"{shape} {color} mark {i} on the {side}" if i % 3 else f"左に{color}の{shape} {i}"]
        for c in caps:
            rows.append({"image_id": image_id, "path": f"img_{i:03d}.png", "caption": c,
                         "label": shape if i % 2 == 0 else "", "split": splits[i], "width": size, "height": size})
    df = pd.DataFrame(rows, columns=["image_id", "path", "caption", "label", "split", "width", "height"])
    df.to_csv(root / "manifest.csv", index=False, encoding="utf-8")
    np.stack(arrays).tofile(root / "cache" / f"images_{size}.u8")
    (root / "cache" / f"images_{size}.json").write_text(json.dumps({"size": size, "count": len(ids), "ids": ids}))
    h = hashlib.sha256("\n".join(f"{r['image_id']}\t{r['caption']}\t{r['label']}\t{r['split']}"
                                 for r in rows).encode()).hexdigest()
    info = {"schema_version": 1, "source": str(root / "photos"), "format": "table", "dataset_hash": h,
            "counts": {"images": n_images, "captions": len(rows), "rejected": 0, "found": n_images},
            "image_size": size, "created": "2026-01-01T00:00:00", "mwa_version": "test"}
    (root / "dataset.json").write_text(json.dumps(info))
    return root


def train_make_tokenizer(path: Path) -> Path:
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


@pytest.fixture(scope="session")
def train_data_dir(tmp_path_factory) -> Path:
    return train_make_data_dir(tmp_path_factory.mktemp("train_data"))


@pytest.fixture(scope="session")
def train_tokenizer(tmp_path_factory) -> Path:
    return train_make_tokenizer(tmp_path_factory.mktemp("train_tok") / "tiny.model")
