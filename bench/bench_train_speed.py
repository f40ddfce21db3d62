"""Training-step speed of every method on BEiT-3 Base and Large, through the trainer `mwa train` uses.

    PYTHONPATH=$PWD python bench/bench_train_speed.py --out bench_results.json

Random weights and data (no download), 224 px, bf16 autocast, fused AdamW. Captions: 64 tokens each
(--text-lengths fixed, the default), or lengths drawn from a caption table's tokenised captions and each batch cut
to its bucket length as `mwa train` cuts it (--text-lengths sample_data, or a data dir / photo folder; tokenised
with --tokenizer, default the backbone's beit3.spm when found, else beit3-mini's; bench/text_lengths.py). For each
variant:
median step time over --steps timings of --window back-to-back steps (the device synchronised only at the ends
of a window, as `mwa train` runs), samples/s, peak memory, and MFU = the variant's own model FLOPs per step /
step time / the card's measured bf16 matmul rate. `compile` is the trainer's regional compilation (each encoder
layer compiled once). `cache` variants train from the feature cache (mwa_cli/train/feature_cache.py) filled
from --cache-batches batches of random images and captions: the fill's rate is reported, and each step's
batch is gathered from the cache (included in the time). Also embedding (inference) throughput. Prints a
Markdown table (docs/benchmarks.md) and writes all numbers as JSON (rewritten after every variant).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import statistics
import time
from typing import Callable

import numpy as np
import torch
from benchlib import time_steps

from mwa_cli.models.text_pad import trim_padding
from mwa_cli.train.step_graph import WARMUP_STEPS
from mwa_cli.train.trainer import build_trainer

BATCH_VARIETY = 8  # distinct batches cycled through per variant (realistic lengths: their widths vary)

# (method, options, torch.compile (or its mode: "reduce-overhead" = CUDA graphs), feature cache, batch multiplier); "top-K" layer counts per backbone depth below.
VARIANTS = [
    ("full-ft", None, False, False, 1),
    ("full-ft", None, True, False, 1),
    ("mwa", None, False, False, 1),
    ("mwa", None, True, False, 1),
    ("mwa", {"layers": "top-third"}, True, False, 1),
    ("mwa", {"layers": "top-third"}, True, True, 1),
    ("mwa", {"layers": "top-third"}, False, True, 1),
    ("mwa", {"layers": "top-third"}, True, True, 4),
    ("nke", None, False, False, 1),
    ("nke", None, True, False, 1),
    ("lora", None, False, False, 1),
    ("mwa", {"preset": "paper-code"}, False, False, 1),
    ("full-ft", None, "reduce-overhead", False, 1),
    ("mwa", {"layers": "top-third"}, "reduce-overhead", True, 1),
    ("full-ft", None, "graph", False, 1),
    ("mwa", None, "graph", False, 1),
    ("nke", None, "graph", False, 1),
    ("mwa", {"layers": "top-third"}, "graph", True, 1),
    ("mwa", None, "reduce-overhead", False, 1),
    ("nke", None, "reduce-overhead", False, 1),
]
FRACTIONS = {"top-half": 2, "top-third": 3, "top-quarter": 4}
BATCH = {"beit3-base": 128, "beit3-large": 64, "beit3-mini": 128, "beit3-tiny-test": 8}
DEPTH = {"beit3-base": 12, "beit3-large": 24, "beit3-mini": 4, "beit3-tiny-test": 2}


def resolve_options(backbone: str, options: dict | None) -> dict | None:
    """Turn top-half/third/quarter into top-K for this backbone's depth."""
    if options and options.get("layers") in FRACTIONS:
        k = max(1, DEPTH[backbone] // FRACTIONS[options["layers"]])
        return {**options, "layers": f"top-{k}"}
    return options


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def matmul_rate(device: str, n: int = 8192, reps: int = 10) -> float:
    """Measured bf16 matmul FLOP/s on random data (median of `reps` products after warm-up)."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    _sync(device)
    times = []
    for _ in range(reps):
        if device == "cuda":  # device time of the product alone (no launch or synchronisation)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            a @ b
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times)


def step_flops(trainer, batch: int, text_len: float, cached: bool = False) -> float:
    """Backbone matmul FLOPs of one training step of this variant (adapters' < 3 % left out).

    Forward through every layer (from the lowest trainable one when the frozen part's output is cached);
    backward: activation gradients (1x forward) for the layers from the lowest trainable one up, weight
    gradients (1x forward) only where the backbone's own weights train (full-ft).
    """
    cfg, applied = trainer.model.config, trainer.applied
    d, depth = cfg.embed_dim, cfg.depth
    layer_w = 4 * d * d + 2 * d * cfg.ffn_dim  # one expert's matrices in one layer
    upper = depth - applied.lowest_trainable_layer
    total = 0.0
    for n_tok in (cfg.num_patches + 1, text_len):
        fwd = 2 * n_tok * layer_w + 4 * n_tok * n_tok * d  # projections + FFN, and q@k^T, p@v
        weights = depth * 2 * n_tok * layer_w if applied.name == "full-ft" else 0.0
        total += batch * ((upper if cached else depth) * fwd + upper * fwd + weights)
    return total


def caption_masks(n: int, text_len: int, lengths: np.ndarray | None, seed: int) -> torch.Tensor:
    """Padding masks [n, text_len] (1 = pad) of captions whose lengths are drawn from `lengths` (None: uniform
    in [text_len / 4, text_len], as Trainer.random_batch)."""
    rng = np.random.default_rng(seed)
    if lengths is None:
        drawn = rng.integers(text_len // 4, text_len + 1, n)
    else:
        drawn = rng.choice(lengths, n, replace=len(lengths) < n)
    return (torch.arange(text_len)[None, :] >= torch.from_numpy(np.minimum(drawn, text_len))[:, None]).long()


def text_batches(trainer, batch_size: int, text_len: int, lengths: np.ndarray | None) -> list[dict]:
    """BATCH_VARIETY training batches of random images; with `lengths`, realistic captions, each batch cut to its
    bucket length (the trainer's input pipeline: mwa_cli/train/data.py), else the fixed text length."""
    base = trainer.random_batch(batch_size, text_len=text_len)
    if lengths is None:
        return [base]
    out = []
    for k in range(BATCH_VARIETY):
        mask = caption_masks(batch_size, text_len, lengths, seed=k)
        mask, ids = trim_padding(mask, base["input_ids"].cpu().masked_fill(mask.bool(), 1))
        if trainer.device.type == "cuda":
            mask, ids = mask.pin_memory(), ids.pin_memory()
        out.append({**base, "input_ids": ids, "padding_mask": mask})
    return out


def cycling(batches: list[dict]) -> dict | Callable[[], dict]:
    """A batch maker that hands out `batches` in turn (a plain batch when there is one)."""
    if len(batches) == 1:
        return batches[0]
    state = {"i": 0}

    def make():
        state["i"] += 1
        return batches[state["i"] % len(batches)]
    return make


def cached_batches(trainer, batch_size: int, text_len: int, n_batches: int, lengths: np.ndarray | None = None
                   ) -> tuple:
    """Fill a GPU feature cache from `n_batches` random batches; returns (make_batch, fill info, widths)."""
    from mwa_cli.models.preprocess import to_pixels
    from mwa_cli.train.feature_cache import fill_feature_cache

    n = batch_size * n_batches
    data = trainer.random_batch(n, text_len=text_len, seed=3, augment=False)
    if lengths is not None:
        data["padding_mask"] = caption_masks(n, text_len, lengths, seed=3)
        data["input_ids"] = data["input_ids"].cpu().masked_fill(data["padding_mask"].bool(), 1)
    rows = np.arange(n)
    k = trainer.applied.lowest_trainable_layer
    fc = fill_feature_cache(trainer.model, k, data["images"].numpy(), rows, data["input_ids"], data["padding_mask"],
                            lambda u8: to_pixels(u8, trainer.image_size), device=trainer.device,
                            dtype=torch.bfloat16, location="gpu" if trainer.device.type == "cuda" else "ram",
                            batch_size=256)
    trainer.use_feature_cache(k)
    gen = torch.Generator().manual_seed(0)
    widths: list[int] = []

    def make() -> dict:
        idx = torch.randperm(n, generator=gen)[:batch_size]
        mask = data["padding_mask"][idx]
        if lengths is not None:  # as TrainBatches(trim_text=True) hands the batch to FeatureCache.inputs
            mask, = trim_padding(mask)
        widths.append(int(mask.shape[1]))
        return fc.inputs({"index": idx, "padding_mask": mask}, trainer.device)

    info = {"cache_pairs": n, "cache_fill_s": fc.fill_s, "cache_fill_pairs_per_s": n / fc.fill_s,
            "cache_gib": fc.nbytes / 2**30, "cache_from_layer": k}
    return make, info, widths


def bench_variant(backbone: str, method: str, options: dict | None, compile_: bool, cached: bool, batch_mult: int,
                  args, peak: float, lengths: np.ndarray | None = None) -> dict:
    cuda = args.device == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    graph = compile_ == "graph"  # regional compilation + the whole step as one CUDA graph (train/step_graph.py)
    compile_ = True if graph else compile_
    trainer = build_trainer(backbone, method, method_options=options, device=args.device, precision="bf16",
                            compile=compile_ and not cached, drop_path=0.0, cuda_graph=graph)
    batch_size = BATCH[backbone] * batch_mult
    extra: dict = {}
    if cached:  # as `mwa train --feature-cache`: fill eagerly, then compile the layers that train
        batch, extra, widths = cached_batches(trainer, batch_size, args.text_len, args.cache_batches, lengths)
        trainer.enable_compile(compile_)
    else:
        batches = text_batches(trainer, batch_size, args.text_len, lengths)
        widths = [int(b["padding_mask"].shape[1]) for b in batches]
        batch = cycling(batches)
    # realistic lengths: every width is seen (compiled, and with graphs captured) before the timed steps
    rounds = 1 + (WARMUP_STEPS if graph else 0)
    warmup = args.warmup + (5 if compile_ else 0) + (rounds * BATCH_VARIETY if lengths is not None else 0)
    if isinstance(compile_, str) or graph:
        extra["compile_mode"] = "graph" if graph else compile_
    times = time_steps(trainer, batch, n=args.steps, warmup=warmup, window=args.window)
    med = statistics.median(times)
    text_tokens = float(np.mean(widths)) if widths else float(args.text_len)
    flops = step_flops(trainer, batch_size, text_tokens, cached)
    row = {
        "backbone": backbone, "method": method, "options": options or {},
        "compile": "graph" if graph else compile_, "cache": cached,
        "batch": batch_size, "median_ms": 1e3 * med, "spread_ms": 1e3 * (max(times) - min(times)),
        "samples_per_s": batch_size / med, "text_tokens_mean": text_tokens,
        "text_widths": sorted(set(widths)) if widths else [args.text_len],
        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0,
        "tflops_per_step": flops / 1e12, "mfu": flops / med / peak,
        "trainable_params": trainer.applied.trainable_params(),
        "setup_s": time.time() - t0 - sum(times) * args.window, **extra,
    }
    del trainer, batch
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    if compile_:
        torch._dynamo.reset()
    return row


def realistic_lengths(source: str, backbone: str, tokenizer: str | None, text_len: int) -> tuple[np.ndarray, str]:
    """Token lengths of the captions of `source` (sample_data: the packaged sample photos), and the tokenizer's
    label."""
    from pathlib import Path

    from text_lengths import caption_lengths, load_tokenizer, read_captions

    from mwa_cli.models.presets import find_tokenizer
    from mwa_cli.resources import SAMPLE_DATA, package_file

    folder = package_file(SAMPLE_DATA) if source == "sample_data" else Path(source)
    captions = read_captions(folder)
    name = tokenizer or find_tokenizer(backbone, None, None) or "mini"
    tok, label = load_tokenizer(name, text_len, captions)
    return caption_lengths(captions, tok), label


@torch.inference_mode()
def bench_inference(backbone: str, device: str, batch: int = 256, reps: int = 10, text_len: int | None = None) -> dict:
    from mwa_cli.models.presets import build_backbone

    model, _ = build_backbone(backbone, device=device)
    model.eval()
    s = model.config.img_size
    text_len = text_len or model.config.text_len
    px = torch.randn(batch, 3, s, s, device=device)
    ids = torch.randint(4, model.config.vocab_size, (batch, text_len), device=device)
    mask = torch.zeros(batch, text_len, dtype=torch.long, device=device)
    out = {}
    for kind, fn in (("images_per_s", lambda m=model: m.encode_image(px)),
                     ("captions_per_s", lambda m=model: m.encode_text(ids, mask))):
        # bf16 on the GPU; fp32 on the CPU, as `mwa` runs there (precision auto)
        with torch.autocast(device, dtype=torch.bfloat16) if device == "cuda" else contextlib.nullcontext():
            for _ in range(3):
                fn()
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            _sync(device)
        out[kind] = batch * reps / (time.perf_counter() - t0)
    del model
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return {"backbone": backbone, "batch": batch, **out}


def table(rows: list[dict]) -> str:
    lines = ["| backbone | method | options | compile | cache | batch | text tokens | step ms (median) | × full-ft | "
             "× compiled full-ft | × fastest full-ft | samples/s | peak GiB | × full-ft mem | MFU |",
             "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        same = [x for x in rows if x["backbone"] == r["backbone"] and x["method"] == "full-ft" and x["batch"] == r["batch"]
                and not x["cache"]]
        eager = next((x for x in same if not x["compile"]), None)
        comp = next((x for x in same if x["compile"] is True), None)
        fastest = min((x for x in same if x["compile"]), key=lambda x: x["median_ms"], default=None)
        opts = ", ".join(f"{k}={v}" for k, v in r["options"].items())

        def ratio(key: str, base: dict | None) -> str:
            return f"{r[key] / base[key]:.2f}" if base and base[key] else "–"

        lines.append(f"| {r['backbone']} | {r['method']} | {opts} | {r['compile'] if isinstance(r['compile'], str) else 'yes' if r['compile'] else 'no'} | "
                     f"{'yes' if r['cache'] else 'no'} | {r['batch']} | {r.get('text_tokens_mean', 64):.1f} | "
                     f"{r['median_ms']:.1f} | {ratio('median_ms', eager)} | {ratio('median_ms', comp)} | "
                     f"{ratio('median_ms', fastest)} | {r['samples_per_s']:.0f} | "
                     f"{r['peak_mem_gib']:.1f} | {ratio('peak_mem_gib', eager)} | {100 * r['mfu']:.1f} % |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", default="beit3-large,beit3-base")
    parser.add_argument("--steps", type=int, default=7, help="timed windows per variant [7]")
    parser.add_argument("--window", type=int, default=3, help="back-to-back steps per timed window [3]")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--text-len", type=int, default=64)
    parser.add_argument("--text-lengths", default="fixed",
                        help="fixed (every batch --text-len wide) | sample_data | a data dir or photo folder: caption "
                             "lengths drawn from its tokenised captions, batches cut to their bucket [fixed]")
    parser.add_argument("--tokenizer", default=None,
                        help="sentencepiece file for --text-lengths [the backbone's beit3.spm when found, else "
                             "beit3-mini's]")
    parser.add_argument("--cache-batches", type=int, default=8, help="batches of random pairs in the feature cache")
    parser.add_argument("--variants", default=None, help="comma-separated indices into VARIANTS [all]")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--stop-at", type=float, default=None,
                        help="Unix time after which no further variant starts (recorded as skipped)")
    parser.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke run (with beit3-tiny-test)")
    parser.add_argument("--out", default="bench_train_speed.json")
    args = parser.parse_args()
    peak = matmul_rate(args.device, n=8192 if args.device == "cuda" else 512)
    info = {"gpu": torch.cuda.get_device_name() if args.device == "cuda" else "CPU", "torch": torch.__version__, "cuda": torch.version.cuda,
            "bf16_matmul_tflops": peak / 1e12, "date": time.strftime("%Y-%m-%d %H:%M"), "window": args.window,
            "steps": args.steps}
    print(json.dumps(info), flush=True)
    chosen = [VARIANTS[int(i)] for i in args.variants.split(",")] if args.variants else VARIANTS
    rows: list[dict] = []
    inference: list[dict] = []

    def save() -> None:  # partial results survive a timeout
        with open(args.out, "w") as fh:
            json.dump({"info": info, "train": rows, "inference": inference}, fh, indent=2)

    for backbone in args.backbones.split(","):
        lengths = None
        if args.text_lengths != "fixed":
            lengths, label = realistic_lengths(args.text_lengths, backbone, args.tokenizer, args.text_len)
            info.setdefault("text_lengths", {})[backbone] = {"source": args.text_lengths, "tokenizer": label,
                                                             "captions": int(len(lengths)),
                                                             "mean_tokens": float(lengths.mean())}
            print(json.dumps({"text_lengths": info["text_lengths"][backbone]}), flush=True)
        for method, options, compile_, cached, mult in chosen:
            if compile_ and args.no_compile:
                continue
            options = resolve_options(backbone, options)
            if args.stop_at is not None and time.time() > args.stop_at:
                rows.append({"backbone": backbone, "method": method, "options": options or {}, "compile": compile_,
                             "cache": cached, "error": "skipped: out of time (--stop-at)"})
                continue
            try:
                row = bench_variant(backbone, method, options, compile_, cached, mult, args, peak, lengths)
            except Exception as exc:  # a failing variant is reported, the table goes on
                row = {"backbone": backbone, "method": method, "options": options or {}, "compile": compile_,
                       "cache": cached, "error": f"{type(exc).__name__}: {exc}"[:300]}
                torch._dynamo.reset()
            print(json.dumps(row), flush=True)
            rows.append(row)
            save()
        inference.append(bench_inference(backbone, args.device, batch=256 if args.device == "cuda" else 8))
        save()
    ok = [r for r in rows if "error" not in r]
    print(f"\nGPU: {info['gpu']}, torch {info['torch']}, measured bf16 matmul {info['bf16_matmul_tflops']:.0f} TFLOP/s\n")
    print(table(ok))
    print("\n| backbone | images/s | captions/s |\n|---|---:|---:|")
    for r in inference:
        print(f"| {r['backbone']} | {r['images_per_s']:.0f} | {r['captions_per_s']:.0f} |")


if __name__ == "__main__":
    main()
