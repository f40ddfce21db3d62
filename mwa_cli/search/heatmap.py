"""Why this match? Occlusion sensitivity: cover one cell of the photo at a time with the photo's mean colour and
measure how much its similarity to the query drops. A cell whose covering lowers the score most is what drove
the match. It measures the model's own score (faithful by construction), needs no gradients, so it works the
same for PyTorch models, Hugging Face backbones and exported ONNX graphs, and costs one batched forward pass of
1 + cells² images per photo (docs/decisions.md says why not patch-token similarity or gradients).
"""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

MAX_CELLS = 8        # at most 8 × 8 cells (64 occluded copies) whatever the model's patch grid
OVERLAY_PX = 128     # side of the overlay image shown in the pages


def cell_grid(image_size: int, patch_size: int | None) -> int:
    """Cells per side: the model's patch grid, merged by an integer factor down to at most MAX_CELLS."""
    patches = image_size // patch_size if patch_size else MAX_CELLS
    return max(1, math.ceil(patches / math.ceil(patches / MAX_CELLS)))


def occlusion_map(model: Any, image_u8: np.ndarray, query: np.ndarray, cells: int) -> tuple[np.ndarray, float]:
    """(drop [cells, cells] ≥ 0 of the cosine to `query` when each cell is covered, the unoccluded cosine).

    `image_u8` is one photo [S, S, 3] at the model's input size; `model` has `encode_pixels(uint8 [B,S,S,3])`."""
    s = image_u8.shape[0]
    edges = np.linspace(0, s, cells + 1).round().astype(int)
    fill = image_u8.reshape(-1, 3).mean(0).round().astype(np.uint8)
    batch = np.repeat(image_u8[None], 1 + cells * cells, axis=0)
    for i in range(cells):
        for j in range(cells):
            batch[1 + i * cells + j, edges[i]:edges[i + 1], edges[j]:edges[j + 1]] = fill
    emb = np.asarray(_numpy(model.encode_pixels(batch)), dtype=np.float32)
    q = np.asarray(query, dtype=np.float32).reshape(-1)
    sims = emb @ q
    drop = np.clip(sims[0] - sims[1:], 0.0, None).reshape(cells, cells)
    return drop, float(sims[0])


def overlay_png(image_u8: np.ndarray, heat: np.ndarray, size: int = OVERLAY_PX) -> str:
    """The photo with the heat map laid over it in red (brighter = mattered more), as a PNG data URI."""
    from PIL import Image

    base = Image.fromarray(image_u8).convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    h = heat / heat.max() if heat.max() > 0 else heat
    alpha = Image.fromarray((h * 170).astype(np.uint8), "L").resize((size, size), Image.Resampling.NEAREST)
    red = Image.new("RGB", (size, size), (220, 20, 20))
    out = Image.composite(red, base.point(lambda v: int(v * 0.8)), alpha)
    buf = io.BytesIO()
    out.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def add_heatmaps(result: dict[str, Any], index: Any, model: Any, *, limit: int = 8, images: bool = True) -> None:
    """Attach `heat` to the first `limit` photo hits of a text-query result: `{"method": "occlusion", "cells",
    "grid" (rows of drops, top-left first), "peak": [row, col], "score"}` plus `overlay` (a data URI) when
    `images`. Hits whose photo cannot be read get `heat: null`."""
    from mwa_cli.errors import DataError
    from mwa_cli.search.query import load_query_image

    q = result.get("query") or {}
    if q.get("kind") != "text":
        return
    qv = _numpy(model.encode_texts([q["text"]]))[0]
    size = int(model.image_size)
    cells = cell_grid(size, _patch_size(model))
    root = Path(index.source)
    for hit in result.get("images", [])[:limit]:
        try:
            path = (root / hit["path"]).resolve()
            if not path.is_relative_to(root.resolve()):
                raise DataError("outside the indexed folder")
            img = load_query_image(path, size, index.meta.get("max_pixels"))[0]
        except (DataError, OSError, TypeError):
            hit["heat"] = None
            continue
        drop, score = occlusion_map(model, img, qv, cells)
        peak = np.unravel_index(int(np.argmax(drop)), drop.shape)
        hit["heat"] = {"method": "occlusion", "cells": cells, "grid": np.round(drop, 5).tolist(),
                       "peak": [int(peak[0]), int(peak[1])], "score": round(score, 6)}
        if images:
            hit["heat"]["overlay"] = overlay_png(img, drop)


def _patch_size(model: Any) -> int | None:
    cfg = getattr(getattr(model, "model", None), "config", None)
    if cfg is not None and getattr(cfg, "patch_size", None):
        return int(cfg.patch_size)
    manifest = getattr(model, "manifest", None)
    return (manifest or {}).get("image", {}).get("patch_size")


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
