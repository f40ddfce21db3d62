"""Builders for fake data dirs and run dirs that follow docs/formats.md exactly (no training needed), plus a
check that the builders themselves produce what the contract says. Imported by the other test_report_* files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

# A caption that tries to run code two ways; the markers it would set ("PWNED", "RANXSS", "RANIMG") never
# appear literally in the source, so finding one in the browser's DOM means the data's code ran.
XSS = ("<script>document.title='PW'+'NED';document.documentElement.setAttribute('data-xss','RAN'+'XSS')</script>"
       "<img src=x onerror=\"document.documentElement.setAttribute('data-xss2','RAN'+'IMG')\">")
LABELS = ["scratch", "dent", "rust", ""]


def _dump(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False), encoding="utf-8")


def make_data_dir(root: Path, *, n_test: int = 6, caps_per_image: int = 2, cache: bool = True,
                  photos: bool = False, extra_caption: str | None = XSS) -> Path:
    """A tiny data dir: manifest.csv (train + test rows), dataset.json, an 8x8 image cache, optional photos."""
    data = root / "data"
    (data / "cache").mkdir(parents=True, exist_ok=True)
    src = root / "photos"
    src.mkdir(exist_ok=True)
    rows, ids, pixels = [], [], []
    rng = np.random.default_rng(0)
    n_train = 3
    for i in range(n_train + n_test):
        split = "train" if i < n_train else "test"
        img = np.zeros((8, 8, 3), np.uint8)
        img[...] = rng.integers(0, 255, size=3, dtype=np.uint8)  # a flat colour per image
        img[2:6, 2:6] = 255 - img[2:6, 2:6]
        iid = hashlib.sha256(img.tobytes()).hexdigest()[:16]
        label = LABELS[i % len(LABELS)]
        path = f"{label or 'misc'}/img_{i:02d}.png"
        if photos:
            from PIL import Image

            (src / path).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).resize((32, 32)).save(src / path)
        ids.append(iid)
        pixels.append(img)
        for c in range(caps_per_image):
            cap = f"{label or 'plain'} defect {c} on part {i} 「左上に長い傷」"
            if extra_caption is not None and i == n_train and c == 0:
                cap = f"caption with {extra_caption} inside"
            rows.append({"image_id": iid, "path": path, "caption": cap, "label": label, "split": split,
                         "width": 32, "height": 32})
    df = pd.DataFrame(rows, columns=["image_id", "path", "caption", "label", "split", "width", "height"])
    df.to_csv(data / "manifest.csv", index=False)
    dhash = hashlib.sha256(df[["image_id", "caption", "label", "split"]].to_csv(index=False).encode()).hexdigest()
    by_split = {s: {"images": int(g.image_id.nunique()), "captions": int(len(g))} for s, g in df.groupby("split")}
    _dump(data / "dataset.json", {
        "schema_version": 1, "source": str(src), "format": "folders", "dataset_hash": dhash,
        "counts": {"images": len(ids), "captions": len(df), "rejected": 0, "found": len(ids), "by_split": by_split},
        "image_size": 224, "created": "2026-01-01T00:00:00+00:00", "mwa_version": "0.1.0"})
    if cache:
        arr = np.stack(pixels).astype(np.uint8)
        arr.tofile(data / "cache" / "images_8.u8")
        _dump(data / "cache" / "images_8.json", {"size": 8, "count": len(ids), "ids": ids})
    return data


def dataset_hash(data: Path) -> str:
    return json.loads((data / "dataset.json").read_text(encoding="utf-8"))["dataset_hash"]


def _recall_block(base: float) -> dict:
    return {"r1": base, "r5": min(100.0, base + 20), "r10": min(100.0, base + 30), "median_rank": 2.0}


def make_run(runs: Path, name: str, method: str, data: Path, *, recall: float = 50.0, wall_s: float = 3600.0,
             device_type: str = "cuda", trainable: int = 1_000_000, total: int = 100_000_000,
             artefact_bytes: int = 4_000_000, dhash: str | None = None, split: str = "test",
             topk: bool = True, eval_json: bool = True, peak_mem: float = 10.0, n_devices: int = 1,
             timing_estimated: bool = False) -> Path:
    """One run folder as `mwa train` writes it. Recall r1 = `recall` in both directions, r5 +20, r10 +30."""
    run = runs / name
    run.mkdir(parents=True)
    dhash = dhash or dataset_hash(data)
    command = f"mwa train {data} --method {method} --backbone beit3-mini --budget 1h --name {name}"
    _dump(run / "config.json", {"method": method, "backbone": "beit3-mini", "budget": "1h", "batch_size": 8,
                                "precision": "bf16", "seed": 0, "command": command, "data_dir": str(data),
                                "dataset_hash": dhash, "mwa_version": "0.1.0"})
    steps = 100
    rows = []
    for s in range(0, steps + 1, 10):
        rows.append({"kind": "train", "step": s, "epoch": s // 50, "loss": 2.5 * np.exp(-s / (40 if method == "full-ft"
                     else 55)) + 0.2, "lr": 1e-4, "samples_per_s": 80.0, "mem_gib": peak_mem,
                     "time_s": wall_s * 0.9 * s / steps})
    rows.append({"kind": "eval", "step": steps, "split": "val", "rsum": 6 * recall, "i2t_r1": recall})
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    _dump(run / "timing.json", {
        "wall_s": wall_s, "train_s": wall_s * 0.9, "eval_s": wall_s * 0.08, "checkpoint_s": wall_s * 0.02,
        "steps": steps, "samples": steps * 8, "samples_per_s": steps * 8 / (wall_s * 0.9),
        "device_hours": wall_s * n_devices / 3600, "device_type": device_type,
        "device_name": "NVIDIA H100 80GB HBM3" if device_type == "cuda" else "cpu",
        "n_devices": n_devices, "peak_mem_gib": peak_mem, "data_wait_fraction": 0.01, "budget_s": 3600,
        "torch": "2.11.0", "mwa": "0.1.0", "trainable_params": trainable, "total_params": total,
        "estimated": timing_estimated})
    df = pd.read_csv(data / "manifest.csv", dtype=str, keep_default_na=False)
    test = df[df.split == split].reset_index(drop=True)
    img_ids = list(dict.fromkeys(test.image_id))
    per_label = {}
    for lab in sorted(set(test.label) - {""}):
        sub = test[test.label == lab]
        blk = _recall_block(recall - 5 * (LABELS.index(lab)))
        per_label[lab] = {"n_images": int(sub.image_id.nunique()), "n_captions": int(len(sub)), "i2t": blk,
                          "t2i": blk, "rsum": 2 * (blk["r1"] + blk["r5"] + blk["r10"])}
    blk = _recall_block(recall)
    rsum = 2 * (blk["r1"] + blk["r5"] + blk["r10"])
    if eval_json:
        _dump(run / "eval.json", {
            "split": split, "protocol": "any caption in top K; every caption is a query", "n_images": len(img_ids),
            "n_captions": len(test), "i2t": blk, "t2i": blk, "rsum": rsum, "mean_recall": rsum / 6,
            "per_label": per_label, "method": method, "backbone": "beit3-mini", "dataset_hash": dhash,
            "seconds": 1.0, "created": "2026-01-02T03:04:05+00:00"})
    if topk:
        t2i = []
        for j, row in test.iterrows():
            others = [i for i in img_ids if i != row.image_id]
            order = ([row.image_id] + others) if j % 2 == 0 else (others[:1] + [row.image_id] + others[1:])
            t2i.append({"caption_index": int(j), "topk": order[:10]})
        i2t = []
        for iid in img_ids:
            own = [int(j) for j in test.index[test.image_id == iid]]
            rest = [int(j) for j in test.index if int(j) not in own]
            i2t.append({"image_id": iid, "topk": (own + rest)[:10]})
        _dump(run / "eval_topk.json", {"split": split, "i2t": i2t, "t2i": t2i})
    (run / "adapter_model.safetensors").write_bytes(b"\0" * artefact_bytes)
    _dump(run / "adapter_config.json", {"format_version": 1, "method": method, "mwa_version": "0.1.0",
                                        "backbone": {"name": "beit3-mini", "config": {}, "weights_sha256": "0"},
                                        "options": {}, "layers": [0, 1], "trainable_params": trainable,
                                        "total_params": total, "token_additions": None})
    return run


def standard_runs(tmp_path: Path, *, with_full_ft: bool = True, device_type: str = "cuda") -> tuple[Path, Path]:
    """data dir + runs/ with full-ft (recall 60, 1 h), mwa (recall 58, 24 min), lora (recall 50, 30 min)."""
    data = make_data_dir(tmp_path)
    runs = tmp_path / "runs"
    if with_full_ft:
        make_run(runs, "full-ft", "full-ft", data, recall=60.0, wall_s=3600.0, trainable=100_000_000,
                 artefact_bytes=400_000, peak_mem=30.0, device_type=device_type)
    make_run(runs, "mwa", "mwa", data, recall=58.0, wall_s=1440.0, trainable=2_500_000, artefact_bytes=10_000,
             peak_mem=12.0, device_type=device_type)
    make_run(runs, "lora", "lora", data, recall=50.0, wall_s=1800.0, trainable=1_000_000, artefact_bytes=4_000,
             peak_mem=14.0, device_type=device_type)
    return data, runs


# ---- the builders follow the contract -----------------------------------------------------------------------
def test_builder_follows_formats(tmp_path):
    data, runs = standard_runs(tmp_path)
    m = pd.read_csv(data / "manifest.csv", dtype=str, keep_default_na=False)
    assert list(m.columns) == ["image_id", "path", "caption", "label", "split", "width", "height"]
    meta = json.loads((data / "cache" / "images_8.json").read_text())
    arr = np.memmap(data / "cache" / "images_8.u8", dtype=np.uint8, mode="r", shape=(meta["count"], 8, 8, 3))
    assert arr.shape[0] == len(meta["ids"]) == m.image_id.nunique()
    for name in ("config.json", "metrics.jsonl", "timing.json", "eval.json", "eval_topk.json",
                 "adapter_model.safetensors", "adapter_config.json"):
        assert (runs / "mwa" / name).is_file()
