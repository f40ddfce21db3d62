"""Does a run end within its budget, the end of the run included? (docs/benchmarks.md, "The end of a run")

    PYTHONPATH=$PWD python bench/budget_end_check.py --out $OUT/budget_end.json --work /tmp/budget_end

Writes a BEiT-3 Large weights file of random values in the project's own format (safetensors with the official
names, as `mwa_cli.models.checkpoint.load_backbone_weights` reads it), prepares the sample photos at the
backbone's size, then runs each case through the real CLI (`python -m mwa_cli train ... --budget B`, so the
budget counts from the process start; `--patience 0`: no early stop, the whole budget is used) and measures
the wall time from launching the process to its exit.
Cases (``--cases``):

* ``full-ft``: `--method full-ft` with the weights file: the end writes a checkpoint of the weights and both
  AdamW moments, the published weights and rebuilds the model for the final evaluation.
* ``mwa-none``: `--method mwa --weights none`: must finish with eval.json and timing.json (the final evaluation
  rebuilds the same random backbone).

A case passes when it exits 0 with eval.json and its wall time is within ``--tolerance`` of the budget, on
either side (ending early leaves budget unused, as an overrun takes more than was given). Prints
the GPU (or CPU) name with every number. On a CPU, a tiny configuration checks the script itself:

    PYTHONPATH=$PWD python bench/budget_end_check.py --backbone beit3-tiny-test --budget 40s --device cpu \\
        --out /tmp/be.json --work /tmp/be

and BEiT-3 Base on a CPU, small batches so that a run holds a few steps (the end of the run is what is checked):

    PYTHONPATH=$PWD python bench/budget_end_check.py --backbone beit3-base --budget 150s --device cpu \\
        --batch-size 4 --cases full-ft --out /tmp/be.json --work /tmp/be
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CASES = {"full-ft": ("full-ft", "file"), "mwa-none": ("mwa", "none")}


def device_name(device: str) -> str:
    import torch

    if device == "cuda":
        return torch.cuda.get_device_name(0)
    from benchlib import cpu_name

    return f"{cpu_name()} ({os.cpu_count()} threads)"


def random_weights_file(backbone: str, path: Path) -> Path:
    """The backbone's state dict, randomly initialised, saved as mwa reads pretrained weights."""
    if path.is_file():
        return path
    import torch
    from safetensors.torch import save_file

    from mwa_cli.models.presets import build_backbone
    from mwa_cli.models.sources import NO_WEIGHTS

    torch.manual_seed(0)
    model, _ = build_backbone(backbone, NO_WEIGHTS)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def prepared_data(work: Path, image_size: int) -> Path:
    from mwa_cli.data.prepare import prepare_dataset
    from mwa_cli.resources import SAMPLE_DATA, package_file

    data = work / f"data_{image_size}"
    if not (data / "manifest.csv").is_file():
        prepare_dataset(package_file(SAMPLE_DATA), data, lang="en", image_size=image_size, progress=False)
    return data


def default_tokenizer() -> str:
    """beit3.spm from shared/ (the device's copy of the reference files) when there, else the built-in small
    model's: the step and evaluation times depend on the text length, not on which pieces the ids stand for."""
    for cand in (REPO / "shared" / "beit3.spm", REPO.parent / "shared" / "beit3.spm"):
        if cand.is_file():
            return str(cand)
    from mwa_cli.resources import MINI_MODEL, package_file

    return str(package_file(MINI_MODEL, "tokenizer.spm"))


def run_case(name: str, args, data: Path, weights: Path, tokenizer: str) -> dict:
    from mwa_cli.train.config import parse_budget

    method, source = CASES[name]
    runs = args.work / "runs"
    run_name = f"{name}-{int(time.time())}"
    cmd = [sys.executable, "-m", "mwa_cli", "train", str(data), "--method", method, "--backbone", args.backbone,
           "--weights", "none" if source == "none" else str(weights), "--tokenizer", tokenizer,
           "--budget", args.budget, "--patience", "0", "--device", args.device, "--out", str(runs),
           "--name", run_name, "--quiet"] + (["--batch-size", str(args.batch_size)] if args.batch_size else [])
    env = dict(os.environ, PYTHONPATH=str(REPO))
    t0 = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=parse_budget(args.budget) * 4 + 600)
    wall = time.monotonic() - t0
    run = runs / run_name
    timing = json.loads((run / "timing.json").read_text()) if (run / "timing.json").is_file() else {}
    plan = json.loads((run / "config.json").read_text()).get("plan", {}) if (run / "config.json").is_file() else {}
    budget = parse_budget(args.budget)
    ok = done.returncode == 0 and (run / "eval.json").is_file() and abs(wall / budget - 1) <= args.tolerance
    return {"case": name, "method": method, "weights": source, "exit_code": done.returncode,
            "eval_written": (run / "eval.json").is_file(), "wall_s": round(wall, 2), "budget_s": budget,
            "over_pct": round(100 * (wall / budget - 1), 2), "passed": ok,
            "timing": {k: timing.get(k) for k in ("wall_s", "train_s", "eval_s", "checkpoint_s", "compile_s",
                                                   "val_zero_shot_s", "layers", "steps", "planned_steps",
                                                   "stop_reason", "peak_mem_gib", "device_name", "end")},
            "plan": {k: plan.get(k) for k in ("total_steps", "step_time_s", "reason")},
            "stderr_tail": done.stderr[-1500:] if done.returncode else ""}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=Path("/tmp/budget_end"))
    ap.add_argument("--backbone", default="beit3-large")
    ap.add_argument("--budget", default="75s")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tokenizer", default=None)
    ap.add_argument("--batch-size", type=int, default=None, help="passed to mwa train (default: its own)")
    ap.add_argument("--tolerance", type=float, default=0.05, help="allowed error either side of the budget (0.05 = 5 %%)")
    ap.add_argument("--cases", default="full-ft,mwa-none", help=f"comma-separated: {', '.join(CASES)}")
    args = ap.parse_args()
    from mwa_cli.models.presets import resolve_config

    _, cfg = resolve_config(args.backbone)
    data = prepared_data(args.work, int(cfg.img_size))
    weights = random_weights_file(args.backbone, args.work / f"{args.backbone}-random.safetensors")
    tokenizer = args.tokenizer or default_tokenizer()
    results = [run_case(c.strip(), args, data, weights, tokenizer) for c in args.cases.split(",") if c.strip()]
    out = {"device": device_name(args.device), "backbone": args.backbone, "tokenizer": tokenizer,
           "tolerance_pct": 100 * args.tolerance, "cases": results, "passed": all(r["passed"] for r in results)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    for r in results:
        print(f"{out['device']}: {r['case']}: {r['wall_s']:.1f} s for a {r['budget_s']:.0f} s budget "
              f"({r['over_pct']:+.1f} %), exit {r['exit_code']}, eval.json {'yes' if r['eval_written'] else 'no'}"
              f" -> {'PASS' if r['passed'] else 'FAIL'}")
    return 0 if out["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
