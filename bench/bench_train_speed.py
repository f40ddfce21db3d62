"""Training-step speed of every method on BEiT-3 Base and Large, through the trainer `mwa train` uses.

    PYTHONPATH=$PWD python bench/bench_train_speed.py --out bench_results.json

Random weights and data (no download), 224 px, 64 text tokens, bf16 autocast, fused AdamW. For each variant:
median step time over --steps timed steps (after --warmup), samples/s, peak memory, and MFU = the variant's
own model FLOPs per step / step time / the card's measured bf16 matmul rate. Also embedding (inference)
throughput. Prints a Markdown table (docs/benchmarks.md) and writes all numbers as JSON.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time

import torch

from mwa_cli.train.loop import build_trainer

# (method, options, torch.compile); "top-K" layer counts are given per backbone depth below.
VARIANTS = [
    ("full-ft", None, False),
    ("full-ft", None, True),
    ("nke", None, False),
    ("mwa", None, False),
    ("mwa", {"preset": "paper-code"}, False),
    ("mwa", {"layers": "top-half"}, False),
    ("mwa", {"layers": "top-third"}, False),
    ("mwa", {"layers": "top-third"}, True),
    ("mwa", {"layers": "top-quarter"}, False),
    ("lora", None, False),
]
FRACTIONS = {"top-half": 2, "top-third": 3, "top-quarter": 4}
BATCH = {"beit3-base": 128, "beit3-large": 64, "beit3-tiny-test": 8}
DEPTH = {"beit3-base": 12, "beit3-large": 24, "beit3-tiny-test": 2}


def resolve_options(backbone: str, options: dict | None) -> dict | None:
    """Turn top-half/third/quarter into top-K for this backbone's depth."""
    if options and options.get("layers") in FRACTIONS:
        k = max(1, DEPTH[backbone] // FRACTIONS[options["layers"]])
        return {**options, "layers": f"top-{k}"}
    return options


def matmul_rate(n: int = 8192, reps: int = 10) -> float:
    """Measured bf16 matmul FLOP/s on random data (median of `reps` products after warm-up)."""
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * n**3 / statistics.median(times)


def step_flops(trainer, batch: int, text_len: int) -> float:
    """Backbone matmul FLOPs of one training step of this variant (adapters' < 3 % left out).

    Forward through every layer; backward: activation gradients (1x forward) for the layers from the lowest
    trainable one up, weight gradients (1x forward) only where the backbone's own weights train (full-ft).
    """
    cfg, applied = trainer.model.config, trainer.applied
    d, depth = cfg.embed_dim, cfg.depth
    layer_w = 4 * d * d + 2 * d * cfg.ffn_dim  # one expert's matrices in one layer
    upper = depth - applied.lowest_trainable_layer
    total = 0.0
    for n_tok in (cfg.num_patches + 1, text_len):
        fwd = 2 * n_tok * layer_w + 4 * n_tok * n_tok * d  # projections + FFN, and q@k^T, p@v
        weights = depth * 2 * n_tok * layer_w if applied.name == "full-ft" else 0.0
        total += batch * (depth * fwd + upper * fwd + weights)
    return total


def bench_variant(backbone: str, method: str, options: dict | None, compile_: bool, steps: int, warmup: int,
                  text_len: int, peak: float) -> dict:
    torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    trainer = build_trainer(backbone, method, method_options=options, device="cuda", precision="bf16",
                            compile=compile_, drop_path=0.0)
    batch_size = BATCH[backbone]
    batch = trainer.random_batch(batch_size, text_len=text_len)
    times = trainer.time_steps(batch, n=steps, warmup=warmup + (5 if compile_ else 0))
    med = statistics.median(times)
    flops = step_flops(trainer, batch_size, text_len)
    row = {
        "backbone": backbone, "method": method, "options": options or {}, "compile": compile_,
        "batch": batch_size, "median_ms": 1e3 * med, "spread_ms": 1e3 * (max(times) - min(times)),
        "samples_per_s": batch_size / med, "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
        "tflops_per_step": flops / 1e12, "mfu": flops / med / peak,
        "trainable_params": trainer.applied.trainable_params(), "setup_s": time.time() - t0 - sum(times),
    }
    del trainer, batch
    gc.collect()
    torch.cuda.empty_cache()
    return row


@torch.inference_mode()
def bench_inference(backbone: str, batch: int = 256, reps: int = 10, text_len: int = 64) -> dict:
    from mwa_cli.models.presets import build_backbone

    model, _ = build_backbone(backbone, device="cuda")
    model.eval()
    s = model.config.img_size
    px = torch.randn(batch, 3, s, s, device="cuda")
    ids = torch.randint(4, 60000, (batch, text_len), device="cuda")
    mask = torch.zeros(batch, text_len, dtype=torch.long, device="cuda")
    out = {}
    for kind, fn in (("images_per_s", lambda: model.encode_image(px)),
                     ("captions_per_s", lambda: model.encode_text(ids, mask))):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            for _ in range(3):
                fn()
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            torch.cuda.synchronize()
        out[kind] = batch * reps / (time.perf_counter() - t0)
    del model
    gc.collect()
    torch.cuda.empty_cache()
    return {"backbone": backbone, "batch": batch, **out}


def table(rows: list[dict]) -> str:
    lines = ["| backbone | method | options | compile | batch | step ms (median) | × full-ft | samples/s | "
             "peak GiB | × full-ft mem | MFU |", "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        base = next(x for x in rows if x["backbone"] == r["backbone"] and x["method"] == "full-ft"
                    and not x["compile"])
        opts = ", ".join(f"{k}={v}" for k, v in r["options"].items())
        lines.append(f"| {r['backbone']} | {r['method']} | {opts} | {'yes' if r['compile'] else 'no'} | {r['batch']} | "
                     f"{r['median_ms']:.1f} | {r['median_ms'] / base['median_ms']:.2f} | {r['samples_per_s']:.0f} | "
                     f"{r['peak_mem_gib']:.1f} | {r['peak_mem_gib'] / base['peak_mem_gib']:.2f} | "
                     f"{100 * r['mfu']:.1f} % |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", default="beit3-base,beit3-large")
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--text-len", type=int, default=64)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--out", default="bench_train_speed.json")
    args = parser.parse_args()
    peak = matmul_rate()
    info = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
            "bf16_matmul_tflops": peak / 1e12, "date": time.strftime("%Y-%m-%d %H:%M")}
    print(json.dumps(info), flush=True)
    rows = []
    for backbone in args.backbones.split(","):
        for method, options, compile_ in VARIANTS:
            if compile_ and args.no_compile:
                continue
            options = resolve_options(backbone, options)
            try:
                row = bench_variant(backbone, method, options, compile_, args.steps, args.warmup, args.text_len, peak)
            except Exception as exc:  # a failing variant is reported, the table goes on
                row = {"backbone": backbone, "method": method, "options": options or {}, "compile": compile_,
                       "error": f"{type(exc).__name__}: {exc}"[:300]}
            print(json.dumps(row), flush=True)
            rows.append(row)
            with open(args.out, "w") as fh:  # partial results survive a timeout
                json.dump({"info": info, "train": rows}, fh, indent=2)
    inference = [bench_inference(b) for b in args.backbones.split(",")]
    ok = [r for r in rows if "error" not in r]
    with open(args.out, "w") as fh:
        json.dump({"info": info, "train": rows, "inference": inference}, fh, indent=2)
    print(f"\nGPU: {info['gpu']}, torch {info['torch']}, measured bf16 matmul {info['bf16_matmul_tflops']:.0f} TFLOP/s\n")
    print(table(ok))
    print("\n| backbone | images/s | captions/s |\n|---|---:|---:|")
    for r in inference:
        print(f"| {r['backbone']} | {r['images_per_s']:.0f} | {r['captions_per_s']:.0f} |")


if __name__ == "__main__":
    main()
