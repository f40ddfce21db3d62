"""A small photos folder with a captions table, as `mwa prepare` reads it (real PNG files, distinct contents)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

COLORS = ["red", "green", "blue", "white"]


def make_photos(root: Path, n: int = 20) -> Path:
    root.mkdir(parents=True)
    rows = ["image,caption"]
    for i in range(n):
        rng = np.random.default_rng(i)
        img = (rng.random((24, 32, 3)) * 80).astype(np.uint8)
        img[4:14, (i * 3) % 16:(i * 3) % 16 + 12] = [(i * 37) % 256, (i * 91) % 256, (i * 53) % 256]
        Image.fromarray(img).save(root / f"p{i:02d}.png")
        rows.append(f"p{i:02d}.png,a {COLORS[i % 4]} mark number {i}")
    (root / "captions.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root
