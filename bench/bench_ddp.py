"""Multi-GPU check: DDP (torchrun) against one GPU, through the trainer `mwa train` uses.

    PYTHONPATH=$PWD python bench/bench_ddp.py --out docs/bench_ddp.json        # a machine with ≥ 2 GPUs
    PYTHONPATH=$PWD python bench/bench_ddp.py --smoke                          # CPU, gloo, tiny model (CI)

(a) Loss agreement: BEiT-3 Base, random weights, method mwa (dropout and drop path 0, so both runs draw nothing
    at random), bf16 autocast, the same seed and the same global batch of --loss-batch random pairs for
    --loss-steps steps: once on 1 GPU, once on 2 GPUs (each takes the rank-strided half; embeddings gathered with
    gradients: global negatives). Prints both loss lists and the largest absolute difference.
(b) Throughput: each of --methods (default drop path 0.1; ``:c`` = the trainer's regional torch.compile,
    ``:cache`` = adapters in the top --cache-layers layers trained from cached hidden states, as
    `mwa train --feature-cache` does), the same global batch --global-batch on 1 and on N GPUs (each rank takes
    its 1/N share), median of --steps timings of --window back-to-back optimizer steps (synchronised at the
    window's ends, as `mwa train` runs) after --warmup: samples/s on 1 and N GPUs, speed-up. CUDA graphs are not
    timed: `mwa train` does not use them (the trainer turns them off under DDP).
The 1-GPU part runs in this process; the 2-GPU part in `python -m torch.distributed.run --nproc-per-node 2` of
this script. Prints a Markdown table and writes all numbers as JSON.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchlib import time_steps  # noqa: E402

from mwa_cli.train.dist.context import get as dist_context  # noqa: E402
from mwa_cli.train.dist.context import init_from_env, teardown  # noqa: E402
from mwa_cli.train.dist.sharding import shard_batch  # noqa: E402
from mwa_cli.train.trainer import build_trainer  # noqa: E402


def _free(trainer) -> None:
    del trainer
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cached_inputs(trainer, batch: dict) -> dict:
    """The batch as the feature cache hands it over: hidden states entering the lowest adapted layer, computed
    once (eval mode, no autograd), and the trainer switched to train from them."""
    k = trainer.applied.lowest_trainable_layer
    model = trainer.model
    with torch.no_grad(), trainer._autocast():
        image = model.image_hidden(trainer.pixels(batch), k)
        text = model.text_hidden(batch["input_ids"].to(trainer.device), batch["padding_mask"].to(trainer.device), k)
    trainer.use_feature_cache(k)
    return {"image_hidden": image, "text_hidden": text, "padding_mask": batch["padding_mask"]}


def work(args) -> dict:
    """Both measurements on this process's world (1 process, or this rank of a torchrun job)."""
    ctx = dist_context()
    world, rank = ctx.world_size, ctx.rank
    device = "cpu" if args.smoke else "cuda"
    precision = "fp32" if args.smoke else "bf16"
    out: dict = {"world_size": world}

    # (a) losses of the first steps on the same global batches
    t = build_trainer(args.backbone, "mwa", method_options={"dropout": 0.0}, device=device, precision=precision,
                      drop_path=0.0, seed=args.seed, total_steps=max(10, args.loss_steps), distributed=world > 1)
    losses = []
    for s in range(args.loss_steps):
        batch = shard_batch(t.random_batch(args.loss_batch, seed=1000 + s), rank, world)
        losses.append(float(ctx.mean(t.step(batch)).item()))
    out["losses"] = losses
    _free(t)

    # (b) throughput at a fixed per-GPU batch
    out["throughput"] = {}
    for variant in args.methods.split(","):
        method, *flags = variant.split(":")
        cache = "cache" in flags
        t = build_trainer(args.backbone, method, device=device, precision=precision, seed=args.seed,
                          total_steps=1000, distributed=world > 1, compile="c" in flags,
                          method_options={"layers": f"top-{args.cache_layers}"} if cache else None)
        g = args.global_batch
        batch = shard_batch(t.random_batch(g, seed=1), rank, world)
        if cache:
            batch = cached_inputs(t, batch)
        times = time_steps(t, batch, n=args.steps, warmup=args.warmup + (3 if "c" in flags else 0),
                             window=args.window)
        med = statistics.median(times)
        mem = torch.cuda.max_memory_allocated(t.device) / 2**30 if t.device.type == "cuda" else 0.0
        out["throughput"][variant] = {"global_batch": g, "median_step_s": med, "samples_per_s": g / med,
                                     "step_times_s": times, "peak_mem_gib": mem}
        _free(t)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
    out["device_name"] = (torch.cuda.get_device_name(torch.cuda.current_device()) if device == "cuda"
                          else f"CPU ({os.cpu_count()} threads)")
    return out


def worker(args) -> None:
    ctx = init_from_env(torch.device("cpu" if args.smoke else "cuda"))
    res = work(args)
    if ctx.is_main:
        Path(args.worker_out).write_text(json.dumps(res))
    ctx.barrier()
    teardown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="CPU + gloo + beit3-tiny-test, tiny sizes (CI)")
    ap.add_argument("--backbone", default=None)
    ap.add_argument("--gpus", type=int, default=2)
    ap.add_argument("--loss-steps", type=int, default=10)
    ap.add_argument("--loss-batch", type=int, default=None, help="global batch of the loss comparison [128]")
    ap.add_argument("--global-batch", type=int, default=None, help="pairs per step on 1 and on N GPUs [256]")
    ap.add_argument("--cache-layers", type=int, default=None, help="adapted top layers of the :cache variants [4]")
    ap.add_argument("--steps", type=int, default=None, help="timed steps [15]")
    ap.add_argument("--warmup", type=int, default=None, help="[5]")
    ap.add_argument("--window", type=int, default=None, help="back-to-back steps per timing [3]")
    ap.add_argument("--methods", default="full-ft,mwa,mwa:c,mwa:cache,mwa:c:cache",
                    help="variants to time: method[:c (compiled)][:cache (top-K, feature cache)] [%(default)s]")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="JSON file [bench_ddp.json]")
    ap.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.smoke:
        defaults = dict(backbone="beit3-tiny-test", loss_steps=min(args.loss_steps, 3), loss_batch=8,
                        global_batch=8, cache_layers=1, steps=3, warmup=1, window=1)
    else:
        defaults = dict(backbone="beit3-base", loss_steps=args.loss_steps, loss_batch=128, global_batch=256,
                        cache_layers=4,
                        steps=10, warmup=5, window=3)
    for k, v in defaults.items():
        if getattr(args, k) is None or k == "loss_steps":
            setattr(args, k, v)
    if args.worker_out:  # a rank of the torchrun job
        if args.smoke:
            torch.set_num_threads(1)
        worker(args)
        return

    if args.smoke:
        torch.set_num_threads(1)
    elif torch.cuda.device_count() < args.gpus:
        sys.exit(f"needs {args.gpus} GPUs, sees {torch.cuda.device_count()}")
    t0 = time.time()
    one = work(args)  # 1 device, in this process
    gc.collect()
    with tempfile.TemporaryDirectory() as tmp:
        part = Path(tmp) / "multi.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(args.gpus),
               str(Path(__file__).resolve()), "--worker-out", str(part), "--backbone", args.backbone,
               "--loss-steps", str(args.loss_steps), "--loss-batch", str(args.loss_batch),
               "--global-batch", str(args.global_batch), "--cache-layers", str(args.cache_layers),
               "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--window", str(args.window), "--methods", args.methods, "--seed", str(args.seed)] + (["--smoke"] if args.smoke else [])
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env.setdefault("OMP_NUM_THREADS", "1" if args.smoke else "8")
        proc = subprocess.run(cmd, env=env)
        if proc.returncode != 0:
            sys.exit(f"the {args.gpus}-process run failed (exit {proc.returncode})")
        multi = json.loads(part.read_text())

    diffs = [abs(a - b) for a, b in zip(one["losses"], multi["losses"])]
    rows = []
    for method in args.methods.split(","):
        a, b = one["throughput"][method], multi["throughput"][method]
        rows.append({"method": method, "global_batch": args.global_batch, "samples_per_s_1": a["samples_per_s"],
                     "samples_per_s_n": b["samples_per_s"], "scaling": b["samples_per_s"] / a["samples_per_s"],
                     "step_s_1": a["median_step_s"], "step_s_n": b["median_step_s"],
                     "peak_mem_gib_1": a["peak_mem_gib"], "peak_mem_gib_n": b["peak_mem_gib"]})
    n = args.gpus
    print(f"\n### DDP check: {args.backbone}, {'fp32 CPU/gloo (smoke)' if args.smoke else 'bf16'}, "
          f"{one['device_name']} ×1 vs ×{n}")
    print(f"\n(a) first {args.loss_steps} losses, global batch {args.loss_batch}, seed {args.seed} (mwa, dropout 0)")
    print("1 device :", [round(x, 5) for x in one["losses"]])
    print(f"{n} devices:", [round(x, 5) for x in multi["losses"]])
    print(f"max |difference| = {max(diffs):.3g}")
    print(f"\n(b) throughput, global batch {args.global_batch} on 1 and on {n} devices, median of {args.steps} "
          f"timings of "
          f"{args.window} steps\n")
    print(f"| method | samples/s, 1 device | samples/s, {n} devices | speed-up | step s (1 / {n}) | peak GiB (1 / {n}) |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['method']} | {r['samples_per_s_1']:.1f} | {r['samples_per_s_n']:.1f} | {r['scaling']:.2f}× | "
              f"{r['step_s_1']:.3f} / {r['step_s_n']:.3f} | {r['peak_mem_gib_1']:.1f} / {r['peak_mem_gib_n']:.1f} |")
    result = {"backbone": args.backbone, "smoke": args.smoke, "devices": n, "device_name": one["device_name"],
              "device_name_multi": multi["device_name"], "torch": torch.__version__,
              "cuda": torch.version.cuda, "losses_1": one["losses"], "losses_n": multi["losses"],
              "loss_max_abs_diff": max(diffs), "loss_batch": args.loss_batch, "throughput": rows,
              "raw_1": one["throughput"], "raw_n": multi["throughput"], "seconds": round(time.time() - t0, 1)}
    out = args.out or ("bench_ddp_smoke.json" if args.smoke else "bench_ddp.json")
    Path(out).write_text(json.dumps(result, indent=2))
    print(f"\nwrote {out} ({result['seconds']} s)")


if __name__ == "__main__":
    main()
