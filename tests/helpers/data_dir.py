"""Fake prepared data dirs written by hand to docs/formats.md (manifest.csv, dataset.json, image cache, optional
photos), so the tests do not depend on `mwa prepare`. One writer for the contract, two image/caption recipes:
`make_train_data_dir` (textured 32x32 images with train/val/test splits and captions the tiny tokenizer knows, for
the trainer) and `make_report_data_dir` (flat 8x8 images, train/test splits, a hostile caption, for the report)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

MANIFEST_COLUMNS = ["image_id", "path", "caption", "label", "split", "width", "height"]
TRAIN_COLORS = ["red", "green", "blue", "yellow", "white", "black"]
TRAIN_SHAPES = ["scratch", "dent", "stain", "crack"]
# A caption that tries to run code two ways; the markers it would set ("PWNED", "RANXSS", "RANIMG") never
# appear literally in the source, so finding one in the browser's DOM means the data's code ran.
XSS = ("<script>document.title='PW'+'NED';document.documentElement.setAttribute('data-xss','RAN'+'XSS')</script>"
       "<img src=x onerror=\"document.documentElement.setAttribute('data-xss2','RAN'+'IMG')\">")
LABELS = ["scratch", "dent", "rust", ""]


def image_id(img: np.ndarray) -> str:
    return hashlib.sha256(img.tobytes()).hexdigest()[:16]


def write_data_dir(data: Path, images: list[np.ndarray], rows: list[dict], *, source: Path, fmt: str,
                   cache: bool = True) -> Path:
    """manifest.csv from `rows`, dataset.json (hash, counts by split), and the cache of `images` at their size."""
    (data / "cache").mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    df.to_csv(data / "manifest.csv", index=False, encoding="utf-8")
    dhash = hashlib.sha256("\n".join(f"{r['image_id']}\t{r['caption']}\t{r['label']}\t{r['split']}"
                                     for r in rows).encode()).hexdigest()
    ids = [image_id(img) for img in images]
    by_split = {s: {"images": int(g.image_id.nunique()), "captions": len(g)} for s, g in df.groupby("split")}
    info = {"schema_version": 1, "source": str(source), "format": fmt, "dataset_hash": dhash,
            "counts": {"images": len(ids), "captions": len(df), "rejected": 0, "found": len(ids), "by_split": by_split},
            "image_size": 224, "created": "2026-01-01T00:00:00+00:00", "mwa_version": "test"}
    (data / "dataset.json").write_text(json.dumps(info, indent=2, ensure_ascii=False), encoding="utf-8")
    if cache:
        size = images[0].shape[0]
        np.stack(images).astype(np.uint8).tofile(data / "cache" / f"images_{size}.u8")
        (data / "cache" / f"images_{size}.json").write_text(json.dumps({"size": size, "count": len(ids), "ids": ids}))
    return data


def make_train_data_dir(root: Path, *, n_images: int = 24, size: int = 32, seed: int = 0) -> Path:
    """The trainer's data dir at `root`: n_images - 8 train, 4 val, 4 test images, two captions each."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    rows, images = [], []
    splits = ["train"] * (n_images - 8) + ["val"] * 4 + ["test"] * 4
    for i in range(n_images):
        color = TRAIN_COLORS[i % len(TRAIN_COLORS)]
        shape = TRAIN_SHAPES[(i // len(TRAIN_COLORS)) % len(TRAIN_SHAPES)]
        img = (rng.random((size, size, 3)) * 60).astype(np.uint8)
        base = np.array([(i * 37) % 256, (i * 91) % 256, (i * 53) % 256], dtype=np.uint8)
        x0 = (i * 5) % (size // 2)
        img[4:4 + size // 2, x0:x0 + size // 2] = base
        images.append(img)
        side = "left" if x0 < size // 4 else "right"
        caps = [f"a {color} {shape} on a steel plate number {i}",
                f"{shape} {color} mark {i} on the {side}" if i % 3 else f"左に{color}の{shape} {i}"]
        for c in caps:
            rows.append({"image_id": image_id(img), "path": f"img_{i:03d}.png", "caption": c,
                         "label": shape if i % 2 == 0 else "", "split": splits[i], "width": size, "height": size})
    return write_data_dir(root, images, rows, source=root / "photos", fmt="table")


def make_report_data_dir(root: Path, *, n_test: int = 6, caps_per_image: int = 2, cache: bool = True,
                         photos: bool = False, extra_caption: str | None = XSS) -> Path:
    """The report's data dir at root/data: 3 train + n_test test images (8x8 flat colours, labels from LABELS),
    `extra_caption` in the first test caption, and the photos themselves (32x32) under root/photos if asked."""
    src = root / "photos"
    src.mkdir(parents=True, exist_ok=True)
    rows, images = [], []
    rng = np.random.default_rng(0)
    n_train = 3
    for i in range(n_train + n_test):
        split = "train" if i < n_train else "test"
        img = np.zeros((8, 8, 3), np.uint8)
        img[...] = rng.integers(0, 255, size=3, dtype=np.uint8)  # a flat colour per image
        img[2:6, 2:6] = 255 - img[2:6, 2:6]
        label = LABELS[i % len(LABELS)]
        path = f"{label or 'misc'}/img_{i:02d}.png"
        if photos:
            from PIL import Image

            (src / path).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).resize((32, 32)).save(src / path)
        images.append(img)
        for c in range(caps_per_image):
            cap = f"{label or 'plain'} defect {c} on part {i} 「左上に長い傷」"
            if extra_caption is not None and i == n_train and c == 0:
                cap = f"caption with {extra_caption} inside"
            rows.append({"image_id": image_id(img), "path": path, "caption": cap, "label": label, "split": split,
                         "width": 32, "height": 32})
    return write_data_dir(root / "data", images, rows, source=src, fmt="folders", cache=cache)
