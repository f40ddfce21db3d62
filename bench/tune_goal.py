"""The goal of `mwa tune` (docs/benchmarks.md), measured: tuned MWA against tuned full fine-tuning on beit3-mini.

    PYTHONPATH=$PWD python bench/tune_goal.py --device cuda --seeds 0 1 2 --jobs 3 --budget 5m \
        --out $OUT/tune_goal_gpu.json
    PYTHONPATH=$PWD:$PYTHONPATH timeout 360 python bench/tune_goal.py --device cuda --seeds 0 1 2 --jobs 3 --threads 4 \
        --budget 2m --out $OUT/tune_goal_gpu_short.json   # a check within 6 minutes: 10-s trials, not the goal's
    PYTHONPATH=$PWD python bench/tune_goal.py --device cuda --large-only --large-choice top-12:cache \
        --out $OUT/tune_goal_large.json          # the choices the first command prints on its last lines
    PYTHONPATH=$PWD python bench/tune_goal.py --device cpu --seeds 0 1 2 --jobs 3 --threads 4 --budget 5m \
        --out $OUT/tune_goal_cpu.json            # jobs x threads <= the machine's free cores

A seed takes its --budget, then two recommended trainings of a trial's length (budget / 12 each) and the set-up
(preparing, process starts, evaluations): with the seeds side by side (--jobs 3; on one GPU the pair of a seed
shares the card with the other seeds alike) --budget 5m stays inside a 10-minute limit, and the issue's scale,
--budget 20m, needs about 25 minutes. The Large check compiles each variant (--large-modes picks the modes).
`mwa tune` needs Optuna (the extra `tune`); on a machine that cannot
reach a package index, carry its wheels and put them on the path first (it uses Optuna's journal file, so
SQLAlchemy and Alembic are not needed):

    pip download --no-deps -d .whl optuna==5.1.0 colorlog          # where pip works; .whl git-ignored
    pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=$PWD:/tmp/site

1. Prepares sample_data (English captions, 64 px, split 0.6/0.2/0.2, as bench/time_to_quality.py).
2. For every seed: `mwa tune DATA --method mwa --compare full-ft --budget B --seed S` (the real command, a process
   of its own; `--jobs` at a time with `--threads` threads each, or one per GPU of `--gpus`).
3. Trains each tune's two recommended configurations on the train split: `mwa train --config recommended-<m>.toml
   --seed S` (the pair of one seed one after the other in the same process slot, so they share the machine alike).
4. Per seed: the time the recommended MWA needs to reach 95 % of the recommended full-ft's best val RSUM (primary
   protocol; wall time without validation checks, as the report counts time to quality) against full-ft's own time
   to it (goal: ≤ 0.6×), and the test recall difference with its paired 95 % interval from `mwa report`'s
   bootstrap (goal: not distinguishable or better, i.e. the interval's upper end ≥ 0).
5. With `--large` (GPU): the step time of the recommended top-K configuration on BEiT-3 Large (random weights,
   batch 64, bf16, the trainer `mwa train` uses; bench/bench_train_speed.py's timing) against compiled full
   fine-tuning (goal: ≤ 0.25×). The mini's top-K is mapped to the same share of Large's 24 layers; its AE width
   and rank are Large's auto (the mini's numbers do not carry over). Timed compiled and with the whole step as
   one CUDA graph (--large-modes). The tune part prints the mapped choices as `--large-only --large-choice ...`,
   which runs this step alone (a later command of its own).

Every number is written with the device it was measured on (GPU name, or CPU model and threads).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from queue import Queue

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from benchlib import gpu_queue  # noqa: E402
from time_to_quality import _mean_ci, device_name, prepare  # noqa: E402

from mwa_cli.errors import MwaError  # noqa: E402
from mwa_cli.report.api import make_report  # noqa: E402
from mwa_cli.tune.records import read_curve  # noqa: E402
from mwa_cli.tune.search import require_optuna  # noqa: E402

SHARE = 0.95
RATIO_GOAL = 0.6
LARGE_GOAL = 0.25
COMPILE_MODES = {"compile": True, "reduce-overhead": "reduce-overhead", "graph": "graph"}  # bench_variant's


def _run(cmd: list[str], threads: int, gpu: str | None) -> subprocess.CompletedProcess:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)  # keeps carried packages
    env = dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS=str(threads))
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu  # one job per GPU: parallel jobs never share a device
    return subprocess.run(cmd, env=env, cwd=str(REPO), capture_output=True, text=True)


def tune_and_train(data: Path, work: Path, seed: int, args, gpus: Queue | None) -> dict:
    """One seed: the tune of both methods, then both recommended configurations trained (test split last)."""
    gpu = gpus.get() if gpus is not None else None
    try:
        tune = [sys.executable, "-m", "mwa_cli", "tune", str(data), "--method", "mwa", "--compare", "full-ft",
                "--backbone", "beit3-mini", "--device", args.device, "--seed", str(seed), "--budget", args.budget,
                "--out", str(work / "tunes"), "--name", f"tune-s{seed}", "--json", "--quiet"]
        for flag, value in (("--trial-budget", args.trial_budget), ("--trial-steps", args.trial_steps),
                            ("--trials", args.trials)):
            if value is not None:
                tune += [flag, str(value)]
        t0 = time.monotonic()
        proc = _run(tune, args.threads, gpu)
        row: dict = {"seed": seed, "tune_exit": proc.returncode, "tune_wall_s": round(time.monotonic() - t0, 1)}
        print(f"seed {seed}: tune exit {proc.returncode} in {row['tune_wall_s']:.0f} s", flush=True)
        if proc.returncode != 0:
            row["error"] = proc.stderr[-2000:]
            return row
        row["tune"] = json.loads(proc.stdout)
        for m in row["tune"]["methods"]:
            if not m["config"]:
                row["error"] = f"{m['method']}: {m['reason']}"
                return row
            name = f"{m['method']}-rec-s{seed}"
            train = [sys.executable, "-m", "mwa_cli", "train", "--config", m["config"], "--seed", str(seed),
                     "--out", str(work / "final"), "--name", name, "--quiet"]
            if not (work / "final" / name / "eval.json").is_file():
                done = _run(train, args.threads, gpu)
                print(f"seed {seed}: {name} exit {done.returncode}", flush=True)
                if done.returncode != 0:
                    row["error"] = f"{name}: {done.stderr[-2000:]}"
                    return row
        return row
    finally:
        if gpu is not None:
            gpus.put(gpu)


def analyse_seed(work: Path, seed: int) -> dict:
    """Time to 95 % of the recommended full-ft's best val RSUM, both runs; the paired test difference."""
    runs = {m: work / "final" / f"{m}-rec-s{seed}" for m in ("mwa", "full-ft")}
    curves = {m: read_curve(p)[0] for m, p in runs.items()}
    ref = max((v for _, v in curves["full-ft"]), default=None)
    out: dict = {"reference_best_val_rsum": ref}
    if ref is not None:
        target = SHARE * ref
        times = {m: next((t for t, v in c if v >= target), None) for m, c in curves.items()}
        out.update(target=target, time_to_target_s=times)
        if times["mwa"] is not None and times["full-ft"]:
            out["ratio"] = times["mwa"] / times["full-ft"]
    rep = make_report([runs["mwa"], runs["full-ft"]], compare="full-ft", write=False)
    main = next(r for r in rep["runs"] if r["method"] == "mwa")
    base = next(r for r in rep["runs"] if r["is_baseline"])
    ci = main.get("recall_delta_ci") or {}
    lo_hi = (ci.get("ci95") or {}).get("rsum")
    out.update(protocol=rep["primary_protocol"], test_rsum={"mwa": (main["recall"] or {}).get("rsum"),
                                                             "full-ft": (base["recall"] or {}).get("rsum")},
               test_rsum_difference=(ci.get("value") or {}).get("rsum"), difference_ci95=lo_hi,
               not_worse=None if lo_hi is None else lo_hi[1] >= 0, verdict=rep["verdict"],
               device={m: json.loads((p / "timing.json").read_text())["device_name"] for m, p in runs.items()})
    return out


def _secs(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.1f} s"


def recommended_params(method: dict) -> str:
    """The chosen trial's configuration in a few words (from `mwa tune --json`)."""
    from mwa_cli.tune.space import describe

    chosen = next(t for t in method["trials"] if t["name"] == method["chosen"])
    return f"{chosen['name']}: {describe(chosen['params'])}"


def large_layers(mini_layers: object, mini_depth: int, depth: int) -> str | None:
    """The mini's layer selection as the same share of another depth (top-3 of 4 → top-18 of 24); None: all."""
    if isinstance(mini_layers, list):  # config.json records the resolved indices (the top ones: top-K or all)
        k = len(mini_layers)
    elif str(mini_layers).startswith("top-"):
        k = int(str(mini_layers)[4:])
    else:
        return None
    scaled = max(1, round(k / mini_depth * depth))
    return None if scaled >= depth else f"top-{scaled}"


def recommended_large_choices(rows: list[dict], work: Path, backbone: str) -> list[tuple[str | None, bool]]:
    """Each seed's recommended MWA layer choice mapped onto `backbone`'s depth, with its feature cache."""
    from mwa_cli.models.presets import resolve_config

    mini_depth, depth = resolve_config("beit3-mini")[1].depth, resolve_config(backbone)[1].depth
    cfgs = [json.loads((work / "final" / f"mwa-rec-s{r['seed']}" / "config.json").read_text())
            for r in rows if "error" not in r]
    return sorted({(large_layers(c["method_options"]["layers"], mini_depth, depth),
                    c.get("feature_cache", "off") != "off") for c in cfgs}, key=str)


def parse_choice(text: str) -> tuple[str | None, bool]:
    """--large-choice: "top-K", "top-K:cache" or "all" (layers of the Large backbone itself)."""
    layers, _, cache = text.partition(":")
    if not (layers == "all" or (layers.startswith("top-") and layers[4:].isdigit())) or cache not in ("", "cache"):
        raise argparse.ArgumentTypeError(f"{text!r}: give top-K, top-K:cache or all")
    return (None if layers == "all" else layers), cache == "cache"


def choice_flag(choice: tuple[str | None, bool]) -> str:
    layers, cached = choice
    return f"--large-choice {layers or 'all'}{':cache' if cached and layers else ''}"


def large_step_check(choices: list[tuple[str | None, bool]], device: str, backbone: str,
                     modes: list[str]) -> dict:
    """Each MWA layer choice's step on `backbone` (random weights) against compiled full-ft, per compile mode (on
    the CPU, a smoke check of this code: eager, both)."""
    import torch
    from bench_train_speed import BATCH, bench_variant, matmul_rate

    cuda = device == "cuda"
    ns = argparse.Namespace(device=device, text_len=64, cache_batches=8, warmup=3, steps=7 if cuda else 2,
                            window=3 if cuda else 1)
    peak = matmul_rate(device, n=8192 if cuda else 512)
    out: dict = {"device": torch.cuda.get_device_name(0) if cuda else device_name(device), "backbone": backbone,
                 "batch": BATCH.get(backbone), "variants": [], "full_ft_compile": cuda}
    ft = bench_variant(backbone, "full-ft", None, cuda, False, 1, ns, peak)
    out["full_ft_ms"] = ft["median_ms"]
    for layers, cached in choices:
        for mode in ([COMPILE_MODES[m] for m in modes] if cuda else [False]):
            row = bench_variant(backbone, "mwa", {"layers": layers} if layers else None, mode,
                                cached and layers is not None, 1, ns, peak)
            row["ratio_to_full_ft"] = row["median_ms"] / ft["median_ms"]
            out["variants"].append(row)
            print(f"[{out['device']}] {backbone} mwa layers={layers or 'all'} cache={cached} compile={mode}: "
                  f"{row['median_ms']:.1f} ms, {row['ratio_to_full_ft']:.2f}x full-ft (compile={cuda}, "
                  f"{ft['median_ms']:.1f} ms)", flush=True)
    best = min((v["ratio_to_full_ft"] for v in out["variants"]), default=None)
    out.update(best_ratio=best, goal=LARGE_GOAL, goal_met=None if best is None else best <= LARGE_GOAL)
    return out


def tune_goal(args, work: Path, dev: str) -> tuple[dict, list[dict]]:
    """Steps 1-4 for every seed: the result's summary and the per-seed rows."""
    try:
        require_optuna()
    except MwaError as err:
        sys.exit(f"{err.message}: {err.hint} (a machine without a package index: see this file's docstring)")
    data = prepare(work)
    gpus = gpu_queue(args.gpus)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        rows = list(pool.map(lambda s: tune_and_train(data, work, s, args, gpus), args.seeds))
    for r in rows:
        if "error" not in r:
            r.update(analyse_seed(work, r["seed"]))
            r["recommended"] = {m["method"]: recommended_params(m) for m in r["tune"]["methods"]}
    ok = [r for r in rows if "ratio" in r]
    ratios = [r["ratio"] for r in ok]
    res = {"budget": args.budget, "trial_budget": args.trial_budget, "trial_steps": args.trial_steps,
           "trials": args.trials, "jobs": args.jobs, "threads": args.threads, "seeds": args.seeds, "share": SHARE,
           "ratio": _mean_ci(ratios), "ratio_goal": RATIO_GOAL,
           "ratio_goal_met": bool(ratios) and len(ok) == len(rows) and all(x <= RATIO_GOAL for x in ratios),
           "not_worse_all_seeds": all(r.get("not_worse") for r in rows), "per_seed": rows}
    for r in rows:
        if "error" in r:
            print(f"[{dev}] seed {r['seed']}: {r['error'][-300:]}")
            continue
        t = r.get("time_to_target_s") or {}
        print(f"[{dev}] seed {r['seed']}: recommended mwa ({r['recommended']['mwa']}) reaches "
              f"{100 * SHARE:g} % of tuned full-ft's best val RSUM ({r['reference_best_val_rsum']}) in "
              f"{_secs(t.get('mwa'))} vs full-ft {_secs(t.get('full-ft'))}: ratio {r.get('ratio', 'none: not reached')}"
              f"; recommended full-ft ({r['recommended']['full-ft']}); test RSUM difference "
              f"{r['test_rsum_difference']} (95 % interval {r['difference_ci95']}, {r['protocol']})")
    print(f"[{dev}] time ratio mean {res['ratio']['mean']} (95 % CI {res['ratio']['ci95']}, {len(ratios)} seeds), "
          f"goal <= {RATIO_GOAL}: {'met' if res['ratio_goal_met'] else 'NOT met'}; test recall not worse on every "
          f"seed: {res['not_worse_all_seeds']}")
    return res, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--work", default="/tmp/mwa_tune_goal")
    ap.add_argument("--device", default="cpu", help="cpu | cuda")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--budget", default="20m", help="each seed's whole tune (split between mwa and full-ft)")
    ap.add_argument("--trial-budget", default=None)
    ap.add_argument("--trial-steps", type=int, default=None, help="tiny checks: trials of N steps")
    ap.add_argument("--trials", type=int, default=None, help="at most N trials per method")
    ap.add_argument("--jobs", type=int, default=1, help="seeds at once (CPU: jobs x threads <= cores)")
    ap.add_argument("--threads", type=int, default=2, help="OMP threads per process")
    ap.add_argument("--gpus", default="", help="comma-separated GPU ids; each parallel seed gets one of its own")
    ap.add_argument("--large", action="store_true", help="also the BEiT-3 Large step check (GPU)")
    ap.add_argument("--large-only", action="store_true",
                    help="only the Large step check, of the --large-choice layers (no tune)")
    ap.add_argument("--large-choice", type=parse_choice, action="append", default=[],
                    help="with --large-only: top-K, top-K:cache or all, in the Large backbone's layers; repeatable")
    ap.add_argument("--large-modes", nargs="+", choices=sorted(COMPILE_MODES), default=["compile", "graph"],
                    help="compile modes of the MWA variants on the GPU (graph: the whole step as one CUDA graph)")
    ap.add_argument("--large-backbone", default="beit3-large", help="beit3-tiny-test: a CPU smoke check")
    args = ap.parse_args()
    if args.large_only and not args.large_choice:
        ap.error("--large-only needs at least one --large-choice (the first run prints them)")
    work = Path(args.work)
    dev = device_name(args.device)
    print(f"device: {dev}", flush=True)
    res: dict = {"device": dev, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    rows: list[dict] = []
    choices = args.large_choice
    if not args.large_only:
        summary, rows = tune_goal(args, work, dev)
        res.update(summary)
        Path(args.out).write_text(json.dumps(res, indent=2), encoding="utf-8")  # kept if the Large check is cut off
        recommended = recommended_large_choices(rows, work, args.large_backbone)
        print(f"the Large step check of the recommended layers on its own: --large-only "
              f"{' '.join(choice_flag(c) for c in recommended)}", flush=True)
        choices = choices or recommended
    if args.large or args.large_only:
        res["large"] = large_step_check(choices, args.device, args.large_backbone, args.large_modes)
        lg = res["large"]
        print(f"[{lg['device']}] {lg['backbone']} step, best recommended variant {lg['best_ratio']} x "
              f"{'compiled ' if lg['full_ft_compile'] else ''}full-ft (goal <= {LARGE_GOAL}): "
              f"{'met' if lg['goal_met'] else 'NOT met'}")
    Path(args.out).write_text(json.dumps(res, indent=2), encoding="utf-8")
    if not args.large_only and not any("ratio" in r for r in rows):
        sys.exit(1)  # no seed could be measured: the reasons are printed above


if __name__ == "__main__":
    main()
