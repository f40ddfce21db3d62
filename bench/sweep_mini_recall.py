"""Recall of every method on sample_data with beit3-mini, over learning rates and layer selections.

    PYTHONPATH=$PWD python bench/sweep_mini_recall.py --device cuda --epochs 10 --out sweep.json

Prepares sample_data (English captions, 64 px, split 0.6/0.2/0.2 so val and test have 88 images each), then
trains each variant for the same number of epochs with the same seed, data order and batch. Defaults are
chosen on the VAL split; test is reported beside it, never used for choosing.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from mwa_cli.data.prepare import prepare_dataset
from mwa_cli.eval.evaluate import evaluate_path
from mwa_cli.resources import SAMPLE_DATA, package_file
from mwa_cli.train.config import TrainConfig
from mwa_cli.train.loop import train

VARIANTS: list[tuple[str, float, dict]] = [
    ("full-ft", 1e-4, {}), ("full-ft", 2e-4, {}), ("full-ft", 5e-4, {}),
    ("mwa", 5e-4, {}), ("mwa", 1e-3, {}), ("mwa", 2e-3, {}), ("mwa", 5e-3, {}),
    ("mwa", 2e-3, {"scale": 0.5}), ("mwa", 2e-3, {"train_heads": True}),
    ("mwa", 2e-3, {"layers": "top-2"}), ("mwa", 2e-3, {"layers": "top-1"}),
    ("nke", 1e-3, {}), ("nke", 2e-3, {}),
    ("lora", 1e-3, {}), ("lora", 2e-3, {}),
]
# Second grid: the first showed every method still improving at the highest learning rate tried.
GRID2: list[tuple[str, float, dict]] = [
    ("full-ft", 1e-3, {}), ("full-ft", 2e-3, {}),
    ("mwa", 1e-2, {}), ("mwa", 2e-2, {}), ("mwa", 1e-2, {"scale": 0.5}), ("mwa", 1e-2, {"train_heads": True}),
    ("mwa", 1e-2, {"layers": "top-2"}),
    ("nke", 5e-3, {}), ("nke", 1e-2, {}), ("lora", 5e-3, {}), ("lora", 1e-2, {}),
]
# Third grid: full-ft and mwa were still improving at 2e-3 / 2e-2.
GRID3: list[tuple[str, float, dict]] = [
    ("full-ft", 3e-3, {}), ("full-ft", 5e-3, {}),
    ("mwa", 5e-2, {}), ("mwa", 2e-2, {"scale": 0.5}), ("mwa", 2e-2, {"scale": 1.0}),
    ("nke", 2e-2, {}), ("nke", 2e-2, {"scale": 0.5}),
]
# The published comparison: every method at its default (val-chosen) learning rate.
FINAL: list[tuple[str, float | None, dict]] = [("full-ft", None, {}), ("mwa", None, {}), ("nke", None, {}),
                                               ("lora", None, {})]
# Fifth grid: what the speed options cost in recall, at the default learning rates. Adapters in the
# top layers only, with random crop + flip or from the feature cache (which turns them off); all layers without
# augmentation separates the cache's effect from the augmentation's.
NO_AUG = {"crop_scale_min": 1.0, "flip": "off"}
CACHE = {"feature_cache": "auto"}
GRID5: list[tuple] = [
    ("full-ft", None, {}), ("mwa", None, {}), ("mwa", None, {}, NO_AUG),
    ("mwa", None, {"layers": "top-3"}), ("mwa", None, {"layers": "top-3"}, CACHE),
    ("mwa", None, {"layers": "top-2"}), ("mwa", None, {"layers": "top-2"}, CACHE),
]
GRIDS = {1: VARIANTS, 2: GRID2, 3: GRID3, 4: FINAL, 5: GRID5}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--epochs", type=float, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="sweep_mini_recall.json")
    parser.add_argument("--grid", type=int, default=1, choices=sorted(GRIDS),
                        help="4: every method at its default rate; 5: layer selection and feature cache")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mwa-sweep-"))
    data = work / "data"
    prepare_dataset(package_file(SAMPLE_DATA), data, lang="en", image_size=64, split="0.6,0.2,0.2", progress=False)
    frozen = evaluate_path(data, split="test", method="frozen", backbone="beit3-mini", device=args.device,
                           write=False)
    frozen_val = evaluate_path(data, split="val", method="frozen", backbone="beit3-mini", device=args.device,
                               write=False)
    rows = [{"method": "frozen", "lr": 0, "options": {}, "val_rsum": frozen_val["rsum"], "test_rsum": frozen["rsum"],
             "steps": 0, "train_s": 0.0, "trainable_params": 0, "test": frozen}]
    print(json.dumps(rows[0]), flush=True)
    for i, (method, lr, options, *extra) in enumerate(GRIDS[args.grid]):
        t0 = time.time()
        train_opts = extra[0] if extra else {}
        run = train(TrainConfig(data_dir=str(data), method=method, method_options=options, backbone="beit3-mini",
                                lr=lr, epochs=args.epochs, batch_size=32, device=args.device, seed=args.seed,
                                out=str(work / "runs"), name=f"v{i}", val_evals=0, checkpoint_minutes=1e9,
                                **train_opts))
        val = evaluate_path(run.run_dir, split="val", device=args.device, write=False)
        row = {"method": method, "lr": json.loads((Path(run.run_dir) / "config.json").read_text())["lr"],
               "options": {**options, **train_opts}, "val_rsum": val["rsum"],
               "test_rsum": run.eval["rsum"], "steps": run.steps, "train_s": run.timing["train_s"],
               "trainable_params": run.timing["trainable_params"], "wall_s": time.time() - t0,
               "device": run.timing["device_name"], "test": run.eval, "total_params": run.timing["total_params"]}
        rows.append(row)
        print(json.dumps(row), flush=True)
        Path(args.out).write_text(json.dumps(rows, indent=2))
    if args.grid == 4:
        print_full_table(rows)
        return
    print("\n| method | lr | options | val RSUM | test RSUM | trainable | steps | train s |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        opts = ", ".join(f"{k}={v}" for k, v in r["options"].items())
        print(f"| {r['method']} | {r['lr']:g} | {opts} | {r['val_rsum']:.1f} | {r['test_rsum']:.1f} | "
              f"{r['trainable_params']:,} | {r['steps']} | {r['train_s']:.1f} |")


def print_full_table(rows: list[dict]) -> None:
    """R@1/5/10 both ways on test, RSUM, share of full-ft RSUM, trainable %, training time."""
    base = next(r for r in rows if r["method"] == "full-ft")["test"]["rsum"]
    print("\n| method | I→T R@1 | R@5 | R@10 | T→I R@1 | R@5 | R@10 | RSUM | % of full-ft | trainable % | train s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        t = r["test"]
        share = 100 * r["trainable_params"] / r.get("total_params", r["trainable_params"] or 1)
        print(f"| {r['method']} | " + " | ".join(f"{t[d][k]:.1f}" for d in ("i2t", "t2i") for k in ("r1", "r5", "r10"))
              + f" | {t['rsum']:.1f} | {100 * t['rsum'] / base:.1f} % | {share:.2f} % | {r['train_s']:.0f} |")


if __name__ == "__main__":
    main()
