"""Builders for fake run dirs that follow docs/formats.md exactly (no training needed), on the report's fake data dir
(helpers/data_dir.py). Used by the report, runs and first-hour tests; tests/unit/report/test_builders.py checks them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from tests.helpers.data_dir import LABELS, XSS
from tests.helpers.data_dir import make_report_data_dir as make_data_dir

__all__ = ["LABELS", "XSS", "dataset_hash", "make_data_dir", "make_run", "standard_runs"]


def _dump(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False), encoding="utf-8")


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
        blk = _recall_block(max(0.0, recall - 5 * LABELS.index(lab)))  # a recall is never below 0
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
