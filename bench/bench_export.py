"""CPU embedding throughput of an exported model (onnxruntime) against mwa's PyTorch model, same run, same inputs.

beit3-mini + an MWA adapter (trainable weights moved off their init), exported with `mwa export`; images/s for
batches of random photos at the model's input size (64 px for beit3-mini) and texts/s for captions, median of `--repeats` timed passes after one warm-up,
with `--threads` for both runtimes. Writes JSON to `--out` and prints it.

    python bench/bench_export.py --out bench_export_cpu.json --threads 2
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from benchlib import cpu_name, publish, save_run


def _rate(fn, n: int, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(n / statistics.median(times), 2)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="JSON file to write")
    ap.add_argument("--backbone", default="beit3-mini")
    ap.add_argument("--method", default="mwa")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", type=int, default=64, help="photos per timed pass (batch 32)")
    ap.add_argument("--texts", type=int, default=256, help="captions per timed pass (batch 256)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from mwa_cli.export.onnx import export_onnx
    from mwa_cli.export.runtime import ExportedModel
    from mwa_cli.search.model import load_search_model

    with tempfile.TemporaryDirectory() as tmp:
        run = save_run(Path(tmp) / "run", args.backbone, args.method, perturb=0.02)
        t0 = time.perf_counter()
        exp = export_onnx(run, Path(tmp) / "exp")
        export_s = time.perf_counter() - t0
        sm = load_search_model(run, device="cpu")
        em = ExportedModel.load(Path(tmp) / "exp", threads=args.threads)
        size = sm.image_size
        u8 = (np.random.default_rng(0).random((args.images, size, size, 3)) * 255).astype(np.uint8)
        rows = np.arange(args.images)
        texts = [f"a long scratch on the upper left of plate {i}" if i % 2 else f"溶接部{i}の右上に傷"
                 for i in range(args.texts)]
        res = {
            "cpu": cpu_name(), "threads": args.threads, "torch": torch.__version__,
            "onnxruntime": __import__("onnxruntime").__version__, "python": platform.python_version(),
            "backbone": args.backbone, "method": args.method, "image_size": size,
            "export_s": round(export_s, 2), "export_check": exp["check"],
            "onnx_mib": round(sum(exp["files"].values()) / 2**20, 1),
            "images_per_s": {
                "pytorch": _rate(lambda: sm.embed_rows(u8, rows, batch_size=32), args.images, args.repeats),
                "onnxruntime": _rate(lambda: em.embed_rows(u8, rows, batch_size=32), args.images, args.repeats)},
            "texts_per_s": {
                "pytorch": _rate(lambda: sm.encode_texts(texts), args.texts, args.repeats),
                "onnxruntime": _rate(lambda: em.encode_texts(texts), args.texts, args.repeats)},
        }
    publish(res, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
