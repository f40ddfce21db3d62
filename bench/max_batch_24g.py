"""The largest training batch of each method on BEiT-3 Large within a plant GPU's memory (24 GiB by default).

    PYTHONPATH=$PWD python bench/max_batch_24g.py --out $OUT/max_batch_24g.json

Random weights, bf16 autocast, 224 px, 64-token captions (--text-len: the widest batch a caption table gives),
the trainer `mwa train` builds (fused AdamW). The CUDA caching allocator is capped at --cap-gib
(`torch.cuda.set_per_process_memory_fraction`, from the card's total), so a larger GPU answers for a smaller one;
a real 24 GB card also holds the CUDA context (about 0.5 GiB; --cap-gib 23.5 for that). A batch fits when one
training step of it does (forward and backward with the optimizer's moments held: batch_probe.probe_fits); the
search doubles from 8, then bisects in multiples of --resolution (batch_probe.largest_fitting, the search
`--batch-size auto` runs, there without the bisection). Layers eager by default (--compile: compiled, as `mwa train` on a GPU; compiled
layers hold fewer activations). The feature-cache variant trains from cached hidden states (their storage, in
RAM or on the GPU, is not counted). Prints a Markdown table and writes JSON with the GPU name.
"""

from __future__ import annotations

import argparse
import gc
import json
import time

import torch

from mwa_cli.train.batch_probe import largest_fitting, probe_fits
from mwa_cli.train.trainer import build_trainer

# (label, method, options, feature cache)
VARIANTS = [
    ("full-ft", "full-ft", None, False),
    ("mwa", "mwa", None, False),
    ("nke", "nke", None, False),
    ("lora", "lora", None, False),
    ("mwa top-8 + feature cache", "mwa", {"layers": "top-8"}, True),  # --cache-layers K: top-K instead
]


def cap_fraction(cap_bytes: float, total_bytes: float) -> float:
    """The allocator fraction that caps it at `cap_bytes` of a card of `total_bytes` (at most the whole card)."""
    if cap_bytes <= 0 or total_bytes <= 0:
        raise ValueError("the memory cap and the card's memory must be positive")
    return min(1.0, cap_bytes / total_bytes)


def cached_inputs(trainer, batch: int, text_len: int):
    """Random hidden states entering the lowest trainable layer (what a feature cache hands the trainer)."""
    cfg = trainer.model.config
    dtype = trainer.dtype or torch.float32
    px = torch.randn(batch, cfg.num_patches + 1, cfg.embed_dim, device=trainer.device, dtype=dtype)
    txt = torch.randn(batch, text_len, cfg.embed_dim, device=trainer.device, dtype=dtype)
    mask = torch.zeros(batch, text_len, dtype=torch.long, device=trainer.device)
    return px, txt, mask


def measure(label: str, method: str, options: dict | None, cached: bool, args) -> dict:
    t0 = time.time()
    if cached:
        options = {"layers": f"top-{args.cache_layers}"}
        label = f"mwa top-{args.cache_layers} + feature cache"
    trainer = build_trainer(args.backbone, method, method_options=options, device=args.device, precision="bf16",
                            compile=args.compile, drop_path=0.1)
    if cached:
        trainer.use_feature_cache(trainer.applied.lowest_trainable_layer)
    peaks: dict[int, float] = {}
    inputs = (lambda b, t=trainer: cached_inputs(t, b, args.text_len)) if cached else None
    cuda = trainer.device.type == "cuda"

    def fits(b: int, trainer=trainer) -> bool:  # bound now: the name is deleted before the next variant
        if cuda:
            torch.cuda.reset_peak_memory_stats(trainer.device)
        ok = probe_fits(trainer, b, args.text_len, inputs)
        peak = torch.cuda.max_memory_allocated(trainer.device) / 2**30 if cuda else 0.0
        print(json.dumps({"variant": label, "batch": b, "fits": ok, "peak_gib": round(peak, 2)}), flush=True)
        if ok:
            peaks[b] = peak
        return ok

    best = largest_fitting(fits, args.max_batch, resolution=args.resolution)
    row = {"variant": label, "method": method, "options": options or {}, "feature_cache": cached,
           "largest_batch": best, "peak_gib": round(peaks.get(best, 0.0), 2),
           "hit_max_batch": best == args.max_batch, "trainable_params": trainer.applied.trainable_params(),
           "seconds": round(time.time() - t0, 1)}
    del trainer
    gc.collect()
    if args.device == "cuda":
        torch.cuda.empty_cache()
    if args.compile:
        torch._dynamo.reset()
    return row


def table(rows: list[dict], cap_gib: float) -> str:
    base = next((r["largest_batch"] for r in rows if r["method"] == "full-ft" and "error" not in r), None)
    lines = [f"| method (within {cap_gib:g} GiB) | largest batch | × full-ft | peak GiB at it |",
             "|---|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['variant']} | error: {r['error'][:60]} | – | – |")
            continue
        ratio = f"{r['largest_batch'] / base:.2f}" if base else "–"
        more = "≥ " if r["hit_max_batch"] else ""
        lines.append(f"| {r['variant']} | {more}{r['largest_batch']} | {ratio} | {r['peak_gib']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="beit3-large")
    parser.add_argument("--cap-gib", type=float, default=24.0, help="memory cap in GiB [24]")
    parser.add_argument("--text-len", type=int, default=64)
    parser.add_argument("--max-batch", type=int, default=2048, help="largest batch tried [2048]")
    parser.add_argument("--resolution", type=int, default=8, help="the answer's granularity [8]")
    parser.add_argument("--variants", default=None, help="comma-separated indices into VARIANTS [all]")
    parser.add_argument("--cache-layers", type=int, default=8, help="adapted top layers of the cache variant [8]")
    parser.add_argument("--compile", action="store_true", help="compiled layers (as mwa train on a GPU)")
    parser.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke run (no cap, tiny backbone)")
    parser.add_argument("--out", default="max_batch_24g.json")
    args = parser.parse_args()
    cuda = args.device == "cuda"
    info = {"gpu": torch.cuda.get_device_name() if cuda else "CPU", "torch": torch.__version__,
            "cuda": torch.version.cuda, "backbone": args.backbone, "cap_gib": args.cap_gib,
            "text_len": args.text_len, "precision": "bf16", "compile": args.compile,
            "date": time.strftime("%Y-%m-%d %H:%M")}
    if cuda:
        total = torch.cuda.get_device_properties(0).total_memory
        info["card_gib"] = round(total / 2**30, 2)
        info["fraction"] = cap_fraction(args.cap_gib * 2**30, total)
        torch.cuda.set_per_process_memory_fraction(info["fraction"], 0)
        torch.backends.cuda.matmul.allow_tf32 = True
    print(json.dumps(info), flush=True)
    chosen = [VARIANTS[int(i)] for i in args.variants.split(",")] if args.variants else VARIANTS
    rows: list[dict] = []
    for label, method, options, cached in chosen:
        try:
            row = measure(label, method, options, cached, args)
        except Exception as exc:  # a failing variant is reported, the table goes on
            row = {"variant": label, "method": method, "error": f"{type(exc).__name__}: {exc}"[:300]}
        print(json.dumps(row), flush=True)
        rows.append(row)
        with open(args.out, "w") as fh:  # partial results survive a timeout
            json.dump({"info": info, "rows": rows}, fh, indent=2)
    print(f"\nGPU: {info['gpu']}, allocator capped at {args.cap_gib:g} GiB, {args.backbone}, bf16, "
          f"{args.text_len}-token captions, layers {'compiled' if args.compile else 'eager'}\n")
    print(table(rows, args.cap_gib))


if __name__ == "__main__":
    main()
