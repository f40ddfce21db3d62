"""Where the time of one training step goes on the GPU: kernel categories and the top kernels per variant.

    PYTHONPATH=$PWD python bench/profile_train_step.py --out profile.json [--variants full-ft:c,mwa:top-8:c]

A variant is ``method[:layers][:c|:ma]`` (``c`` torch.compile, ``ma`` compile mode max-autotune-no-cudagraphs).
Same trainer and random data as bench/bench_train_speed.py (BEiT-3 Large, batch 64 by default). For each variant:
median step time (CUDA-synchronised), the GPU-busy share of the wall time (low: the host is the bottleneck), the
kernel time per category (matmul, attention, Triton-fused, optimizer, other elementwise, copies) and the 12
longest kernels. A diagnostic, not the reported benchmark.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from collections import defaultdict

import torch
from benchlib import time_steps
from torch.profiler import ProfilerActivity, profile

from mwa_cli.train.trainer import build_trainer

CATEGORIES = (  # first match wins
    ("attention", ("flash", "fmha", "attention", "sdpa")),
    ("matmul", ("gemm", "cutlass", "xmma", "nvjet", "cublas", "sm90_", "wgmma")),
    ("optimizer", ("adam", "multi_tensor", "foreach")),
    ("triton (fused)", ("triton",)),
    ("norm", ("layer_norm", "layernorm")),
    ("copy/cast", ("copy", "memcpy", "memset", "cast", "fill")),
    ("elementwise", ("elementwise", "vectorized", "reduce", "gelu")),
)


def category(name: str) -> str:
    low = name.lower()
    for cat, keys in CATEGORIES:
        if any(k in low for k in keys):
            return cat
    return "other"


def parse_variant(spec: str) -> tuple[str, dict | None, bool | str]:
    parts = spec.split(":")
    method, options, compile_ = parts[0], None, False
    for p in parts[1:]:
        if p == "c":
            compile_ = True
        elif p == "ma":
            compile_ = "max-autotune-no-cudagraphs"
        else:
            options = {"layers": p}
    return method, options, compile_


def profile_variant(backbone: str, spec: str, batch_size: int, steps: int) -> dict:
    method, options, compile_ = parse_variant(spec)
    torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    if compile_ == "max-autotune-no-cudagraphs":
        import torch._inductor.config as ind

        ind.max_autotune = True
        ind.max_autotune_gemm = True
    trainer = build_trainer(backbone, method, method_options=options, device="cuda", precision="bf16",
                            compile=bool(compile_), drop_path=0.0)
    batch = trainer.random_batch(batch_size, text_len=64)
    times = time_steps(trainer, batch, n=steps, warmup=8 if compile_ else 3)
    setup_s = time.time() - t0 - sum(times)
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        t1 = time.perf_counter()
        for _ in range(3):
            trainer.step(batch)
        trainer.synchronize()
        wall = (time.perf_counter() - t1) / 3
    per_cat: dict[str, float] = defaultdict(float)
    kernels = []
    for evt in prof.key_averages():
        cuda_us = getattr(evt, "self_device_time_total", None)
        if cuda_us is None:
            cuda_us = getattr(evt, "self_cuda_time_total", 0.0)
        if cuda_us <= 0 or evt.device_type != torch.autograd.DeviceType.CUDA:
            continue
        ms = cuda_us / 1e3 / 3
        per_cat[category(evt.key)] += ms
        kernels.append((ms, evt.count // 3, evt.key[:110]))
    kernels.sort(reverse=True)
    busy = sum(per_cat.values())
    row = {"backbone": backbone, "variant": spec, "batch": batch_size, "median_ms": 1e3 * statistics.median(times),
           "profiled_wall_ms": 1e3 * wall, "gpu_busy_ms": busy, "gpu_busy_share": busy / (1e3 * wall),
           "per_category_ms": dict(sorted(per_cat.items(), key=lambda kv: -kv[1])),
           "top_kernels": [{"ms": round(ms, 3), "calls": n, "name": name} for ms, n, name in kernels[:12]],
           "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30, "setup_s": setup_s}
    del trainer, batch
    gc.collect()
    torch.cuda.empty_cache()
    if compile_:
        torch._dynamo.reset()
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="beit3-large")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--variants", default="full-ft:c,mwa:c,mwa:top-8:c,full-ft:ma")
    ap.add_argument("--out", default="profile_train_step.json")
    args = ap.parse_args()
    info = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M")}
    rows = []
    for spec in args.variants.split(","):
        try:
            row = profile_variant(args.backbone, spec, args.batch, args.steps)
        except Exception as exc:  # report and go on
            row = {"variant": spec, "error": f"{type(exc).__name__}: {exc}"[:400]}
        rows.append(row)
        print(json.dumps(row, indent=1), flush=True)
        with open(args.out, "w") as fh:
            json.dump({"info": info, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
