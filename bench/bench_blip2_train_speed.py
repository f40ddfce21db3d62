"""Training-step time and peak memory of full fine-tuning vs MWA on the real-size BLIP-2 retrieval architecture.

    PYTHONPATH=$PWD python bench/bench_blip2_train_speed.py --out bench_blip2_train_speed.json

The `blip2-itm-vit-g` preset (ViT-g/14 + Q-Former, 1.17 B parameters) with random weights built on the GPU from
the config written in mwa_cli/models/blip2.py (no download, no network), through the trainer `mwa train` uses:
bf16 autocast, fused AdamW, eager (no torch.compile), 224 px, 32 text tokens (BLIP-2's caption length).

For each method (full-ft first), a ladder of batch sizes is climbed with real optimizer steps (optimizer state
included; the trainer's out-of-memory back-off is turned off so a batch that does not fit raises) and the largest
that fits is kept. The method is then timed at its own largest batch (throughput) and, for MWA, also at full-ft's
largest batch (a like-for-like step ratio): median step time over --steps timed windows of --window back-to-back
steps, samples/s and peak memory. No variant starts after --budget-s seconds (recorded as skipped), so the run
stays within the lent machine's time. Every printed line carries the GPU name; all numbers go to --out as JSON,
rewritten after every measurement. `--device cpu --backbone hf:DIR --ladder 2,4` is a smoke run on a tiny model.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time

import torch
from benchlib import time_steps

from mwa_cli.train.trainer import OOM_ERRORS, build_trainer

METHODS = ("full-ft", "mwa")
LADDER = (32, 64, 96, 128, 192, 256, 384, 512)


def _release(trainer=None) -> None:
    if trainer is not None and trainer.optimizer is not None:
        trainer.optimizer.zero_grad(set_to_none=True)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _trainer(args, method: str):
    trainer = build_trainer(args.backbone, method, device=args.device, precision="bf16", drop_path=0.0)
    trainer._can_back_off = lambda: False  # a batch that does not fit must raise, not fall back to micro-batches
    return trainer


def largest_batch(trainer, ladder: list[int], text_len: int, deadline: float) -> tuple[int, list[dict]]:
    """Climb `ladder` with two real optimizer steps per rung; the largest batch that fits, and each rung's fate."""
    best, tried = 0, []
    for b in ladder:
        if time.time() > deadline:
            tried.append({"batch": b, "fits": None, "note": "skipped: out of time (--budget-s)"})
            break
        batch = trainer.random_batch(b, text_len=text_len, seed=1)
        try:
            for _ in range(2):
                trainer.step(batch)
            trainer.synchronize()
            fits = True
        except OOM_ERRORS:
            fits = False
        del batch
        _release(trainer)
        tried.append({"batch": b, "fits": fits})
        if not fits:
            break
        best = b
    return best, tried


def time_at(trainer, batch_size: int, args) -> dict:
    """Median step time, samples/s and peak memory at `batch_size`."""
    batch = trainer.random_batch(batch_size, text_len=args.text_len)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = time_steps(trainer, batch, n=args.steps, warmup=args.warmup, window=args.window)
    med = statistics.median(times)
    peak = torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else 0.0
    del batch
    _release(trainer)
    return {"batch": batch_size, "median_ms": 1e3 * med, "spread_ms": 1e3 * (max(times) - min(times)),
            "samples_per_s": batch_size / med, "peak_mem_gib": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="blip2-itm-vit-g")
    parser.add_argument("--ladder", default=",".join(map(str, LADDER)), help="batch sizes to try, ascending")
    parser.add_argument("--steps", type=int, default=5, help="timed windows per measurement [5]")
    parser.add_argument("--window", type=int, default=2, help="back-to-back steps per timed window [2]")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--text-len", type=int, default=32)
    parser.add_argument("--budget-s", type=float, default=170.0, help="no new measurement starts after this [170]")
    parser.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke run (with --backbone hf:DIR)")
    parser.add_argument("--out", default="bench_blip2_train_speed.json")
    args = parser.parse_args()
    t0 = time.time()
    deadline = t0 + args.budget_s
    ladder = sorted(int(x) for x in args.ladder.split(","))
    gpu = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    info = {"gpu": gpu, "torch": torch.__version__, "cuda": torch.version.cuda, "backbone": args.backbone,
            "precision": "bf16", "compile": False, "text_len": args.text_len, "date": time.strftime("%Y-%m-%d %H:%M"),
            "steps": args.steps, "window": args.window}
    result: dict = {"info": info, "methods": {}, "timings": []}

    def save() -> None:  # partial results survive a timeout
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=2)

    def report(row: dict) -> None:
        print(json.dumps({"gpu": gpu, **row}), flush=True)

    print(json.dumps(info), flush=True)
    for method in METHODS:  # one trainer per method, alone on the card: ladder, then timings
        trainer = _trainer(args, method)
        best, tried = largest_batch(trainer, ladder, args.text_len, deadline)
        result["methods"][method] = {"max_batch": best, "ladder": tried,
                                     "trainable_params": trainer.applied.trainable_params(),
                                     "total_params": trainer.applied.total_params(),
                                     "options": trainer.applied.options}
        report({"method": method, "max_batch": best, "ladder": tried})
        save()
        # a fresh trainer for the timings: the rung that ran out of memory can leave the first one's memory held
        del trainer
        _release()
        trainer = _trainer(args, method)
        # the batches found so far that fit this method: full-ft's largest gives the like-for-like ratio
        fitted = [t["batch"] for t in tried if t["fits"]]
        batches = sorted({m["max_batch"] for m in result["methods"].values()} - {0})
        for b in [x for x in batches if x <= best]:
            kind = "largest batch" if b == best else "full-ft's largest batch"
            # a rung that fitted in the ladder may not fit again once memory is fragmented: step down
            for tb in [x for x in reversed(fitted) if x <= b]:
                row = {"method": method, "batch": tb, "kind": kind}
                if time.time() > deadline:
                    row["error"] = "skipped: out of time (--budget-s)"
                else:
                    try:
                        row.update(time_at(trainer, tb, args))
                    except OOM_ERRORS as exc:
                        row["error"] = f"out of memory while timing: {str(exc)[:200]}"
                        _release(trainer)
                report(row)
                result["timings"].append(row)
                save()
                if "out of memory" not in row.get("error", ""):
                    break
        del trainer
        _release()
    result["wall_s"] = time.time() - t0
    save()
    ok = {(r["method"], r["batch"]): r for r in result["timings"] if "error" not in r}
    print(f"\nGPU: {gpu}, torch {torch.__version__}, {args.backbone}, bf16, eager, text {args.text_len}; "
          f"{result['wall_s']:.0f} s in all\n")
    print("| method | batch | step ms (median) | × full-ft (same batch) | samples/s | peak GiB | trainable |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for (method, b), r in sorted(ok.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        base = ok.get(("full-ft", b))
        ratio = f"{r['median_ms'] / base['median_ms']:.2f}" if base else "–"
        print(f"| {method} | {b} | {r['median_ms']:.1f} | {ratio} | {r['samples_per_s']:.0f} | {r['peak_mem_gib']:.1f} | "
              f"{result['methods'][method]['trainable_params']:,} |")


if __name__ == "__main__":
    main()
