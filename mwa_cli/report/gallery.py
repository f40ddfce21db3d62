"""Retrieval gallery: a few queries from ``eval_topk.json`` with captions from manifest.csv and thumbnails.

Thumbnails come from the data dir's image cache (``cache/images_<S>.u8`` + ``.json``, read with numpy.memmap;
the smallest cached size >= 96 px, else the largest), falling back to the photo under dataset.json ``source``.
They are embedded as JPEG ``data:`` URIs so the report stays one file without any external request.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from mwa_cli.report.collect import Run

THUMB_PX = 112


def _spread(items: list[Any], n: int) -> list[Any]:
    if len(items) <= n:
        return list(items)
    idx = sorted({int(round(x)) for x in np.linspace(0, len(items) - 1, n)})
    return [items[i] for i in idx]


class DataDir:
    """Read-only view of a data dir: split captions in file order, image ids, thumbnails."""

    def __init__(self, path: Path):
        from mwa_cli.data.manifest import read_csv

        self.path = path
        self.manifest = read_csv(path / "manifest.csv", dtype=str)
        info_path = path / "dataset.json"
        self.info: dict[str, Any] = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
        self._split_rows: dict[str, Any] = {}
        self._cache: tuple[dict[str, int], np.ndarray] | None | bool = False
        self._thumbs: dict[str, str | None] = {}
        self._paths = dict(zip(self.manifest["image_id"], self.manifest["path"]))

    def split_rows(self, split: str):
        if split not in self._split_rows:
            rows = self.manifest[self.manifest["split"] == split].reset_index(drop=True)
            self._split_rows[split] = rows
        return self._split_rows[split]

    def _open_cache(self) -> tuple[dict[str, int], np.ndarray] | None:
        if self._cache is False:
            self._cache = None
            sizes = []
            for idx in (self.path / "cache").glob("images_*.json"):
                try:
                    meta = json.loads(idx.read_text(encoding="utf-8"))
                    s = int(meta["size"])
                    if idx.with_suffix(".u8").is_file():
                        sizes.append((s, meta, idx.with_suffix(".u8")))
                except (ValueError, KeyError, json.JSONDecodeError):
                    continue
            if sizes:
                big_enough = [x for x in sizes if x[0] >= 96]
                s, meta, u8 = min(big_enough, key=lambda x: x[0]) if big_enough else max(sizes, key=lambda x: x[0])
                n = int(meta.get("count", len(meta["ids"])))
                expected = n * s * s * 3
                if u8.stat().st_size >= expected and n > 0:
                    arr = np.memmap(u8, dtype=np.uint8, mode="r", shape=(n, s, s, 3))
                    self._cache = ({str(i): k for k, i in enumerate(meta["ids"])}, arr)
        return self._cache if self._cache else None  # type: ignore[return-value]

    def _load_image(self, image_id: str):
        from PIL import Image, ImageOps

        cache = self._open_cache()
        if cache is not None and image_id in cache[0]:
            return Image.fromarray(np.asarray(cache[1][cache[0][image_id]]))
        src, rel = self.info.get("source"), self._paths.get(image_id)
        if src and rel:
            p = Path(src) / rel
            if p.is_file():
                with Image.open(p) as im:
                    return ImageOps.exif_transpose(im).convert("RGB")
        return None

    def thumbnail(self, image_id: str) -> str | None:
        """``data:image/jpeg;base64,...`` for the image, or None when neither cache nor photo is there."""
        if image_id not in self._thumbs:
            uri = None
            try:
                im = self._load_image(image_id)
            except (OSError, ValueError):
                im = None
            if im is not None:
                im = im.convert("RGB")
                im.thumbnail((THUMB_PX, THUMB_PX))
                buf = io.BytesIO()
                im.save(buf, format="JPEG", quality=82)
                uri = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
            self._thumbs[image_id] = uri
        return self._thumbs[image_id]


def _hit_rule(run: Run, rows: Any, protocol: str):
    """hit(query image, caption text, image holding that caption, candidate image) under the report's protocol:
    for an image query the caption is the retrieved one, for a caption query the query itself. Instance level: the
    pair belongs together; label level (as the verdict counts): the caption's text is one of the image's own
    (key "caption"), or the two images share a label (key "label")."""
    if protocol != "label_level" or rows is None:
        return lambda image, caption, owner: owner == image
    key = str((run.eval.get("label_level") or {}).get("key") or "caption")
    texts: dict[str, set[str]] = {}
    labels: dict[str, str] = {}
    for image_id, text, label in zip(rows["image_id"], rows["caption"], rows["label"]):
        texts.setdefault(str(image_id), set()).add(str(text))
        labels[str(image_id)] = str(label or "")
    if key == "label":
        return lambda image, caption, owner: owner == image or (bool(labels.get(owner)) and
                                                                labels.get(owner) == labels.get(image))
    return lambda image, caption, owner: owner == image or caption in texts.get(image, set())


def build_gallery(run: Run, data: DataDir | None, protocol: str = "instance", *, n_t2i: int = 4, n_i2t: int = 3,
                  k_img: int = 5, k_cap: int = 3) -> dict[str, Any] | None:
    """Gallery entries for one run (JSON-ready, no image data), or None without eval_topk.json. A result is a hit
    under `protocol`, the report's primary one, so the examples count what the verdict counts."""
    topk = run.eval_topk
    if not topk:
        return None
    split = str(topk.get("split") or run.split or "test")
    rows = data.split_rows(split) if data is not None else None
    hit = _hit_rule(run, rows, protocol)

    def caption(idx: int) -> tuple[str | None, str | None]:
        if rows is None or not (0 <= idx < len(rows)):
            return None, None
        return str(rows.at[idx, "caption"]), str(rows.at[idx, "image_id"])

    t2i = []
    for q in _spread(list(topk.get("t2i") or []), n_t2i):
        cap, own = caption(int(q["caption_index"]))
        t2i.append({
            "caption_index": int(q["caption_index"]), "caption": cap, "image_id": own,
            "results": [{"image_id": str(i), "hit": own is not None and hit(str(i), cap, own)}
                        for i in list(q.get("topk") or [])[:k_img]],
        })
    i2t = []
    for q in _spread(list(topk.get("i2t") or []), n_i2t):
        res = []
        for c in list(q.get("topk") or [])[:k_cap]:
            cap, owner = caption(int(c))
            res.append({"caption_index": int(c), "caption": cap,
                        "hit": owner is not None and hit(str(q["image_id"]), cap, owner)})
        i2t.append({"image_id": str(q["image_id"]), "results": res})
    return {"split": split, "protocol": protocol, "t2i": t2i, "i2t": i2t}
