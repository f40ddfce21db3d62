"""Line-store fixtures: sample_data-style photos (the generator of scripts/make_sample_data.py, a seed sample_data
does not use), a held-out data dir made of them (written to docs/formats.md by `write_data_dir`), and finished
beit3-mini adapter runs whose quality is set by how far their trainables are moved (noise 0: the backbone itself,
which knows these photos; large noise: near chance), each evaluated by `mwa eval`'s code (eval.json + ranks)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mwa_cli.adapters.io import save_adapter
from mwa_cli.adapters.registry import apply_method
from mwa_cli.models.presets import build_backbone
from tests.helpers.data_dir import image_id, make_train_data_dir, write_data_dir
from tests.unit.search.test_heatmap import sample_generator  # scripts/make_sample_data.py

LABELS = ["scratch", "crack", "dent", "rust", "hole", "missing_part", "misalignment", "no_defect"]


def sample_photos(folder: Path, n: int = 24, seed: int = 777) -> list[dict]:
    """`n` generated photos written to `folder` (JPEG) with one English caption each: [{path, caption, label}]."""
    gen = sample_generator()
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        label = LABELS[i % len(LABELS)]
        data, surface, loc, size = gen.make_one(i, label, seed)
        name = f"{i:03d}_{label}.jpg"
        (folder / name).write_bytes(data)
        rows.append({"path": name, "caption": gen.captions(label, surface, loc, size)[0][1], "label": label})
    return rows


def held_out_dir(root: Path, photos: Path, rows: list[dict], *, size: int = 64, train: int = 0) -> Path:
    """A prepared data dir over `rows` (the first `train` in the train split, the rest test), cached at `size`."""
    from mwa_cli.data.images import square_resize

    images, manifest = [], []
    for k, r in enumerate(rows):
        img = np.asarray(square_resize(Image.open(photos / r["path"]).convert("RGB"), size), dtype=np.uint8)
        images.append(img)
        manifest.append({"image_id": image_id(img), "path": r["path"], "caption": r["caption"], "label": r["label"],
                         "split": "train" if k < train else "test", "width": 160, "height": 160})
    return write_data_dir(root, images, manifest, source=photos, fmt="table")


def adapter_run(path: Path, data_dir: Path, *, noise: float, seed: int = 1, method: str = "mwa",
                backbone: str = "beit3-mini", final_split: str = "test") -> Path:
    """A finished run of `method` on `backbone` (seed 0) with its trainables moved by N(0, noise²), its config.json
    naming `data_dir`, and its final evaluation (eval.json, eval_ranks.json) on `final_split` of it."""
    from mwa_cli.data.manifest import load_dataset_info
    from mwa_cli.eval.evaluate import evaluate_path

    torch.manual_seed(0)
    model, info = build_backbone(backbone)
    applied = apply_method(model, method)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in applied.trainable_named_parameters():
            if name != "logit_scale":
                p.add_(torch.randn(p.shape, generator=g) * noise)
    save_adapter(path, model, applied, info)
    config = {"method": method, "backbone": backbone, "seed": 0, "data_dir": str(data_dir), "final_split": final_split,
              "dataset_hash": load_dataset_info(data_dir).get("dataset_hash"), "device": "cpu", "precision": "fp32",
              "command": f"mwa train {data_dir} --method {method} (test fixture, noise {noise})"}
    (path / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    evaluate_path(path, data_dir=data_dir, split=final_split, device="cpu")
    return path


@dataclass
class Sample:
    photos: Path
    data: Path    # the held-out data dir over `photos` (test split)
    good1: Path   # near the backbone (which knows these photos)
    good2: Path   # another one as good
    bad: Path     # trainables moved far: near chance
    full_ft: Path
    frozen: Path
    tiny: Path    # an adapter for another backbone


def make_sample(root: Path, n: int = 32) -> Sample:
    """Photos, their held-out data dir and the runs above, under `root` (one torch thread: reproducible)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = sample_photos(root / "photos", n)
        data = held_out_dir(root / "data", root / "photos", rows)
        runs = root / "runs"
        return Sample(photos=root / "photos", data=data,
                      good1=adapter_run(runs / "good1", data, noise=0.02, seed=1),
                      good2=adapter_run(runs / "good2", data, noise=0.02, seed=2),
                      bad=adapter_run(runs / "bad", data, noise=3.0, seed=3),
                      full_ft=adapter_run(runs / "full", data, noise=0.0, method="full-ft"),
                      frozen=adapter_run(runs / "frozen", data, noise=0.0, method="frozen"),
                      tiny=adapter_run(runs / "tiny", make_train_data_dir(root / "tiny_data"), noise=0.02,
                                       backbone="beit3-tiny-test"))
    finally:
        torch.set_num_threads(before)
