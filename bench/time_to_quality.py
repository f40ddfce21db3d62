"""Time to 95 % and 99 % of full fine-tuning's best val RSUM, per method, over several seeds (docs/benchmarks.md).

    PYTHONPATH=$PWD python bench/time_to_quality.py --out ttq.json --work /tmp/ttq --budget 150s --seeds 0,1,2

Prepares sample_data (English captions, 64 px, split 0.6/0.2/0.2: 88 val and 88 test images), then trains every
method and seed through the real CLI (`mwa train --budget B --patience 0 --schedule wsd --val-share S`, so the
budget clock starts with the process) and reads each run's validation curve. Time is wall time without the
validation checks (`time_no_val_s`), so the denser checks used here (share S) cost no method anything. The target
for seed s is a share of full-ft's best val RSUM *of the same seed*. Also replays early stopping on every curve
for a range of patience values with checks spaced as the default 5 % share would space them, to choose the
default patience. Prints the device with every number; `--analyse-only` re-reads existing runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from queue import Queue

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchlib import cpu_name, gpu_queue  # noqa: E402

from mwa_cli.report.quality_time import best_rsum, simulate_patience, time_to, val_curve  # noqa: E402
from mwa_cli.train.config import parse_budget  # noqa: E402
from mwa_cli.train.loop import MIN_STOP_FRACTION  # noqa: E402

SHARES = (0.95, 0.99)
T95 = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776, 6: 2.571}  # two-sided 95 % Student t, n-1 degrees of freedom


def device_name(device: str) -> str:
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name(0)
    return f"{cpu_name()} ({os.cpu_count()} threads)"


def prepare(work: Path) -> Path:
    from mwa_cli.data.prepare import prepare_dataset
    from mwa_cli.resources import SAMPLE_DATA, package_file

    data = work / "data"
    if not (data / "manifest.csv").is_file():
        prepare_dataset(package_file(SAMPLE_DATA), data, lang="en", image_size=64, split="0.6,0.2,0.2", progress=False)
    return data


def run_one(data: Path, runs: Path, method: str, seed: int, args, gpus: Queue | None = None) -> Path:
    name = f"{method}-s{seed}"
    run = runs / name
    if (run / "eval.json").is_file():
        return run
    cmd = [sys.executable, "-m", "mwa_cli", "train", str(data), "--method", method, "--backbone", "beit3-mini",
           "--budget", args.budget, "--seed", str(seed), "--patience", "0", "--schedule", "wsd",
           "--val-share", str(args.val_share), "--device", args.device, "--out", str(runs), "--name", name,
           "--quiet"]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS=str(args.threads))
    gpu = gpus.get() if gpus is not None else None
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu  # one run per GPU: parallel runs never share a device
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, env=env, cwd=str(REPO), capture_output=True, text=True)
    finally:
        if gpu is not None:
            gpus.put(gpu)
    print(f"{name}: exit {proc.returncode} in {time.monotonic() - t0:.0f} s {proc.stdout.strip()[-200:]}"
          f"{proc.stderr.strip()[-300:]}", flush=True)
    return run


def _mean_ci(xs: list[float]) -> dict:
    if not xs:
        return {"mean": None, "ci95": None, "n": 0}
    m = statistics.fmean(xs)
    if len(xs) < 2:
        return {"mean": m, "ci95": None, "n": len(xs)}
    half = T95.get(len(xs), 1.96) * statistics.stdev(xs) / math.sqrt(len(xs))
    return {"mean": m, "ci95": [m - half, m + half], "n": len(xs)}


def analyse(runs: Path, methods: list[str], seeds: list[int], budget_s: float, baseline: str = "full-ft") -> dict:
    curves, finals = {}, {}
    for m in methods:
        for s in seeds:
            run = runs / f"{m}-s{s}"
            rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()] \
                if (run / "metrics.jsonl").is_file() else []
            curves[(m, s)] = val_curve(rows)
            ev = json.loads((run / "eval.json").read_text()) if (run / "eval.json").is_file() else {}
            tm = json.loads((run / "timing.json").read_text()) if (run / "timing.json").is_file() else {}
            wall = tm.get("wall_s")
            finals[(m, s)] = {"test_rsum": ev.get("rsum"), "wall_s": wall, "steps": tm.get("steps"),
                              "val_share": tm.get("val_share"), "best": tm.get("best"),
                              "budget_error_pct": round(100.0 * (wall / budget_s - 1), 2) if wall else None}
    out: dict = {"methods": {}, "patience": {}}
    for m in methods:
        entry: dict = {"per_seed": {}}
        for share in SHARES:
            times, steps, reached = [], [], 0
            for s in seeds:
                ref = best_rsum(curves[(baseline, s)])
                hit = time_to(curves[(m, s)], share * ref) if ref is not None else None
                entry["per_seed"].setdefault(str(s), {})[f"to_{int(share * 100)}"] = hit
                if hit is not None:
                    reached += 1
                    times.append(hit["time_s"])
                    steps.append(hit["step"])
            entry[f"to_{int(share * 100)}"] = {"time_s": _mean_ci(times), "step": _mean_ci(steps),
                                               "reached": reached, "seeds": len(seeds)}
        entry["best_val_rsum"] = _mean_ci([best_rsum(curves[(m, s)]) or 0.0 for s in seeds])
        entry["test_rsum"] = _mean_ci([finals[(m, s)]["test_rsum"] for s in seeds if finals[(m, s)]["test_rsum"]])
        entry["wall_s"] = _mean_ci([finals[(m, s)]["wall_s"] for s in seeds if finals[(m, s)]["wall_s"]])
        for s in seeds:
            entry["per_seed"][str(s)].update(finals[(m, s)], curve=curves[(m, s)])
        out["methods"][m] = entry
    errors = [abs(f["budget_error_pct"]) for f in finals.values() if f["budget_error_pct"] is not None]
    out["budget_accuracy"] = {"runs": len(errors), "within_3pct": sum(e <= 3.0 for e in errors),
                     "max_abs_error_pct": max(errors, default=None)}
    costs = {(m, s): _check_cost(runs / f"{m}-s{s}") for (m, s) in curves}
    for (m, s), cost in costs.items():
        out["methods"][m]["per_seed"][str(s)]["check_cost_s"] = cost
    out["patience"] = patience_tables(curves, costs)
    return out


def patience_tables(curves: dict, check_costs: dict) -> dict:
    """Early stopping replayed on every curve, with the trainer's guard (never before MIN_STOP_FRACTION of the
    steps): with the recorded checks, and with checks 19 check-costs apart (the spacing of the default 5 % share)."""
    out: dict = {}
    for spacing in ("recorded", "share_5pct"):
        out[spacing] = {}
        for p in range(1, 9):
            kept, saved, stopped = [], [], 0
            for key, c in curves.items():
                if len(c) < 3:
                    continue
                gap = 19 * check_costs[key] if spacing == "share_5pct" else 0.0
                sim = simulate_patience(c, p, gap, not_before=MIN_STOP_FRACTION)
                kept.append(100.0 * sim["best_rsum"] / sim["full_best_rsum"])
                saved.append(100.0 * (1 - sim["stop_time_s"] / sim["full_time_s"]))
                stopped += sim["stopped"]
            out[spacing][str(p)] = {
                "best_kept_pct_min": min(kept, default=None),
                "best_kept_pct_mean": statistics.fmean(kept) if kept else None,
                "time_saved_pct_mean": statistics.fmean(saved) if saved else None, "runs_stopped": stopped,
                "runs": len(kept)}
    return out


def replay(path: Path) -> dict:
    """Recompute the patience tables of an earlier output from its stored curves (check cost: the stored one, else
    val_share × wall time / checks, which counts the cold step-0 check like the others)."""
    res = json.loads(path.read_text(encoding="utf-8"))
    curves, costs = {}, {}
    for m, entry in res["methods"].items():
        for s, seed in entry["per_seed"].items():
            curves[(m, s)] = seed["curve"]
            costs[(m, s)] = seed.get("check_cost_s") or \
                seed["val_share"] * seed["wall_s"] / max(1, (seed.get("best") or {}).get("checks") or 1)
    res["patience"] = patience_tables(curves, costs)
    res["patience_replayed"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return res


def _check_cost(run: Path) -> float:
    """Mean seconds of one val check of a run (its time_s − time_no_val_s grows by one check each time)."""
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    ev = [r for r in rows if r.get("kind") == "eval" and r.get("split") == "val" and "time_no_val_s" in r]
    if len(ev) < 2:
        return 0.0
    spent = (ev[-1]["time_s"] - ev[-1]["time_no_val_s"]) - (ev[0]["time_s"] - ev[0]["time_no_val_s"])
    return spent / (len(ev) - 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--work", default="/tmp/mwa_ttq")
    ap.add_argument("--budget", default="150s")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--methods", default="full-ft,mwa,nke,lora")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--val-share", type=float, default=0.2)
    ap.add_argument("--jobs", type=int, default=1, help="runs at once")
    ap.add_argument("--threads", type=int, default=1, help="OMP threads per run")
    ap.add_argument("--gpus", default="", help="comma-separated GPU ids; each parallel run gets one of its own")
    ap.add_argument("--analyse-only", action="store_true")
    ap.add_argument("--replay", type=Path, help="recompute the patience tables of this earlier output into --out")
    args = ap.parse_args()
    if args.replay:
        res = replay(args.replay)
        dev = res["device"]
    else:
        res, dev = run_and_analyse(args)
    Path(args.out).write_text(json.dumps(res, indent=2), encoding="utf-8")
    for m, e in res["methods"].items():
        t95, t99 = e["to_95"], e["to_99"]
        print(f"[{dev}] {m}: to 95 % {t95['time_s']['mean']} s ({t95['reached']}/{t95['seeds']} seeds), "
              f"to 99 % {t99['time_s']['mean']} s ({t99['reached']}/{t99['seeds']}), best val RSUM "
              f"{e['best_val_rsum']['mean']:.1f}, test RSUM {e['test_rsum']['mean']}")
    b = res["budget_accuracy"]
    print(f"[{dev}] budget {res['budget']}: {b['within_3pct']}/{b['runs']} runs within 3 %, "
          f"largest error {b['max_abs_error_pct']} %")
    for spacing, table in res["patience"].items():
        for p, v in table.items():
            print(f"[{dev}] patience {p} ({spacing} checks): stopped {v['runs_stopped']}/{v['runs']} runs, best kept "
                  f"≥ {v['best_kept_pct_min']} %, time saved {v['time_saved_pct_mean']} %")


def run_and_analyse(args) -> tuple[dict, str]:
    """Train every (method, seed) not trained yet under --work, then analyse the runs."""
    work = Path(args.work)
    methods = args.methods.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = work / "runs"
    dev = device_name(args.device)
    print(f"device: {dev}", flush=True)
    if not args.analyse_only:
        data = prepare(work)
        jobs = [(m, s) for s in seeds for m in methods]
        gpus = gpu_queue(args.gpus)
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            list(pool.map(lambda ms: run_one(data, runs, ms[0], ms[1], args, gpus), jobs))
    res = analyse(runs, methods, seeds, parse_budget(args.budget))
    res.update(device=dev, budget=args.budget, seeds=seeds, val_share=args.val_share, jobs=args.jobs,
               threads=args.threads, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    return res, dev


if __name__ == "__main__":
    main()
