"""Class-folder data on beit3-mini: label-level recall of MWA vs full fine-tuning, several seeds, on the CPU.

    PYTHONPATH=$PWD python bench/class_folders_goal.py --out class_folders.json --seeds 0 1 2 --jobs 2

Builds sample_data as class folders (scripts/make_class_folders.py: 440 photos, 8 labels), prepares it like the
class-folder check (`--format folders --lang en`, 64 px, split 0.6/0.2/0.2), then trains every (method, positives,
learning rate, seed) of `--runs` as separate `mwa train --device cpu` processes (for `--epochs`, else the
product's default length), `--jobs` at a time with `--threads` threads each, and reads each run's eval.json (test
split). Prints the CPU's name with the tables (per run, per label); writes every run's numbers (instance and
label-level metrics, per label, chance, train seconds) to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mwa_cli.data.label_text import parse_label_text_items  # noqa: E402
from mwa_cli.data.prepare import prepare_dataset  # noqa: E402
from scripts.make_class_folders import build_class_folders  # noqa: E402

DEFAULT_RUNS = ["full-ft:auto:default", "mwa:auto:default"]  # each method at its defaults for this data


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} threads)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} threads)"


def run_one(data: Path, runs: Path, spec: str, seed: int, epochs: float | None, threads: int, *,
            device: str = "cpu", val_probe: Path | None = None, batch_size: str = "32") -> dict:
    method, positives, lr, *extra = spec.split(":", 3)
    extra_args = shlex.split(extra[0]) if extra else []
    slug = re.sub(r"[^A-Za-z0-9.=]+", "_", extra[0]).strip("_") if extra else ""
    name = f"{method}-{positives}-{lr}{'-' + slug if slug else ''}-s{seed}"
    cmd = [sys.executable, "-m", "mwa_cli", "train", str(data), "--backbone", "beit3-mini", "--method", method,
           "--positives", positives, "--device", device, "--seed", str(seed),
           "--out", str(runs), "--name", name, "--quiet", "--json", "--workers", "0", *extra_args]
    if batch_size != "default":
        cmd += ["--batch-size", batch_size]
    if epochs is not None:
        cmd += ["--epochs", str(epochs)]
    if lr != "default":
        cmd += ["--lr", lr]
    if val_probe is not None:
        cmd += ["--config", str(val_probe)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(REPO))
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    row = {"spec": spec, "method": method, "positives": positives, "lr_arg": lr, "seed": seed, "epochs": epochs,
           "exit_code": proc.returncode, "wall_s": round(time.time() - t0, 1)}
    if proc.returncode != 0:
        row["error"] = proc.stderr[-1500:]
        return row
    run_dir = runs / name
    cfg = json.loads((run_dir / "config.json").read_text())
    ev = json.loads((run_dir / "eval.json").read_text())
    timing = json.loads((run_dir / "timing.json").read_text())
    ll = ev["label_level"]
    row.update(lr=cfg["lr"], positives_resolved=cfg["positives"], templated=cfg["positives_detail"].get("templated"),
               steps=timing["steps"], train_s=timing["train_s"], best_step=timing.get("best", {}).get("step"),
               trainable_params=timing["trainable_params"], total_params=timing["total_params"],
               instance={"i2t": ev["i2t"], "t2i": ev["t2i"], "rsum": ev["rsum"]},
               label_level={k: ll[k] for k in ("key", "i2t", "t2i", "rsum", "chance")},
               per_label={k: {"i2t_r1": v["i2t"]["r1"], "t2i_r1": v["t2i"]["r1"], "chance_i2t_r1": v["chance"]["i2t_r1"]}
                          for k, v in ll["per_label"].items()},
               primary_protocol=ev["primary_protocol"])
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="class_folders.json")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--runs", nargs="+", default=DEFAULT_RUNS,
                    help="METHOD:POSITIVES:LR[:EXTRA TRAIN ARGS] (LR 'default' = preset), e.g. "
                         "'mwa:auto:default:--option scale=0.5'")
    ap.add_argument("--device", default="cpu", help="cpu | cuda (probes only: the goal is measured on the CPU)")
    ap.add_argument("--batch-size", default="32", help="32 (the CPU default, as every table so far) or 'default' "
                    "(the product's: 128 on a GPU)")
    ap.add_argument("--val-probe", action="store_true",
                    help="judge on val (final split val, no val checks during training): for choosing settings "
                         "without touching the test split")
    ap.add_argument("--label-text", action="append", default=None, metavar="LABEL=PHRASE",
                    help="label descriptions for prepare (repeatable), as `mwa prepare --label-text`")
    ap.add_argument("--epochs", type=float, default=None, help="default: the product's default length")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mwa-folders-"))
    build_class_folders(work / "photos")
    prepare_dataset(work / "photos", work / "data", fmt="folders", lang="en", image_size=64, split="0.6,0.2,0.2",
                    progress=False, label_texts=parse_label_text_items(args.label_text) if args.label_text else None)
    val_probe = None
    if args.val_probe:
        val_probe = work / "val_probe.json"
        val_probe.write_text(json.dumps({"final_split": "val", "val_evals": 0}))
    machine = cpu_name()
    if args.device == "cuda":
        import torch

        machine = f"{torch.cuda.get_device_name(0)}, host {machine}"
    print(f"machine: {machine}", flush=True)
    jobs = [(spec, seed) for seed in args.seeds for spec in args.runs]
    rows: list[dict] = []
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [pool.submit(run_one, work / "data", work / "runs", spec, seed, args.epochs, args.threads,
                               device=args.device, val_probe=val_probe, batch_size=args.batch_size)
                   for spec, seed in jobs]
        for f in futures:
            row = f.result()
            row["machine"] = machine
            rows.append(row)
            ll = row.get("label_level", {})
            print(f"[{machine}] {row['spec']} seed {row['seed']}: exit {row['exit_code']}, label-level I→T R@1 "
                  f"{ll.get('i2t', {}).get('r1', float('nan')):.1f} (chance {ll.get('chance', {}).get('i2t_r1', 0):.1f}), "
                  f"instance RSUM {row.get('instance', {}).get('rsum', float('nan')):.1f}, "
                  f"train {row.get('train_s', 0):.0f} s", flush=True)
            Path(args.out).write_text(json.dumps({"machine": machine, "device": args.device, "epochs": args.epochs,
                                                  "split": "val" if args.val_probe else "test",
                                                  "label_text": args.label_text, "rows": rows}, indent=2))
    length = f"{args.epochs:g} epochs" if args.epochs else "default length"
    print(f"\nmachine: {machine}; {length}; label-level I→T R@1 on "
          f"{'val' if args.val_probe else 'test'} (88 images, 264 captions)")
    print("| run | seeds | label-level I→T R@1 per seed | mean | min per-label I→T R@1 | instance RSUM mean |")
    print("|---|---|---|---:|---:|---:|")
    for spec in args.runs:
        rs = [r for r in rows if r["spec"] == spec and r["exit_code"] == 0]
        if not rs:
            continue
        r1 = [r["label_level"]["i2t"]["r1"] for r in rs]
        worst = min(min(v["i2t_r1"] for v in r["per_label"].values()) for r in rs)
        inst = sum(r["instance"]["rsum"] for r in rs) / len(rs)
        print(f"| {spec} | {len(rs)} | {', '.join(f'{x:.1f}' for x in r1)} | {sum(r1) / len(r1):.1f} | {worst:.1f} | "
              f"{inst:.1f} |")
    labels = sorted({k for r in rows for k in r.get("per_label", {})})
    print("\nper label, label-level I→T R@1 (seeds in order; chance "
          + ", ".join(sorted({f"{v['chance_i2t_r1']:.1f}" for r in rows for v in r.get("per_label", {}).values()}))
          + ")")
    print("| run | " + " | ".join(labels) + " |")
    print("|---|" + "---|" * len(labels))
    for spec in args.runs:
        rs = [r for r in rows if r["spec"] == spec and r["exit_code"] == 0]
        if rs:
            cells = ["/".join(f"{r['per_label'][k]['i2t_r1']:.0f}" for r in rs) for k in labels]
            print(f"| {spec} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
