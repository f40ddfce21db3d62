"""Search benchmarks on the CPU (results go to docs/benchmarks.md, "## search (CPU)").

1. Text query latency over N random unit embeddings (default 100k × 768, float32) after the model is loaded:
   text encoding (tokenizer + encode_text of a beit3-tiny-test adapter) + exact chunked top-k search
   (`mwa_cli.search.query.exact_topk`), median and p95 over repeated queries after warm-up.
2. Index build throughput: `build_index` on a folder of synthetic JPEG photos with the beit3-tiny-test backbone
   (decode with prepare's workers + embedding), then the no-op incremental re-run.

    python bench/bench_search.py                      # defaults
    python bench/bench_search.py --n 100000 --dim 768 --photos 400 --json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from benchlib import cpu_name, save_run


def bench_query(run_dir: Path, n: int, dim: int, queries: int, chunk: int) -> dict:
    from mwa_cli.search.model import load_search_model
    from mwa_cli.search.query import exact_topk

    sm = load_search_model(run_dir, device="cpu")
    g = torch.Generator().manual_seed(0)
    matrix = torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=1).contiguous()
    proj = torch.randn(sm.model.config.embed_dim, dim, generator=g)  # tiny model's d → the index's d
    texts = [f"a long scratch on the upper left of plate {i}" for i in range(queries)] + ["右上に傷"] * 5
    for t in texts[:5]:  # warm-up
        exact_topk(matrix, torch.nn.functional.normalize(sm.encode_texts([t]) @ proj, dim=1), 10, chunk=chunk)
    enc, srch, total = [], [], []
    for t in texts:
        t0 = time.perf_counter()
        q = sm.encode_texts([t])
        t1 = time.perf_counter()
        q = torch.nn.functional.normalize(q @ proj, dim=1)
        exact_topk(matrix, q, 10, chunk=chunk)
        t2 = time.perf_counter()
        enc.append((t1 - t0) * 1000)
        srch.append((t2 - t1) * 1000)
        total.append((t2 - t0) * 1000)

    def stats(xs):
        xs = sorted(xs)
        return {"median_ms": round(statistics.median(xs), 2), "p95_ms": round(xs[int(0.95 * (len(xs) - 1))], 2)}

    return {"n": n, "dim": dim, "queries": len(texts), "chunk": chunk, "encode": stats(enc), "search": stats(srch),
            "total": stats(total)}


def bench_build(run_dir: Path, photos: int, width: int, height: int, workers: int | None) -> dict:
    from PIL import Image

    from mwa_cli.search.build import build_index

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "photos"
        root.mkdir()
        rng = np.random.default_rng(0)
        base = (rng.random((height // 8, width // 8, 3)) * 255).astype(np.uint8)
        for i in range(photos):
            arr = np.kron(np.roll(base, i, axis=1), np.ones((8, 8, 1), dtype=np.uint8))
            Image.fromarray(arr).save(root / f"photo_{i:05d}.jpg", quality=90)
        t0 = time.perf_counter()
        first = build_index(root, run_dir, Path(tmp) / "idx", device="cpu", workers=workers)
        t1 = time.perf_counter()
        again = build_index(root, run_dir, Path(tmp) / "idx", device="cpu", workers=workers)
        t2 = time.perf_counter()
    return {"photos": photos, "photo_px": f"{width}x{height} JPEG", "workers": workers,
            "images_per_s": first["images_per_s"], "wall_s": round(t1 - t0, 2),
            "wall_images_per_s": round(photos / (t1 - t0), 1), "noop_rerun_s": round(t2 - t1, 2),
            "noop_embedded": again["counts"]["embedded"]}


def bench_approx(n: int, dim: int, queries: int) -> dict:
    """faiss IVF-Flat (mwa_cli.search.approx) vs exact on clustered synthetic embeddings: recall@10 and latency,
    with the lists the former hand-written IVF used (≈ 4·√N) for comparison. bench_approx.py measures more."""
    from mwa_cli.search.approx import ApproxIndex, KeyRows, recall_at_k
    from mwa_cli.search.query import exact_topk

    g = torch.Generator().manual_seed(1)
    centres = torch.nn.functional.normalize(torch.randn(1000, dim, generator=g), dim=1)
    x = centres[torch.randint(0, 1000, (n,), generator=g)] + 0.08 * torch.randn(n, dim, generator=g)
    x = torch.nn.functional.normalize(x, dim=1)
    q = x[torch.randint(0, n, (queries,), generator=g)] + 0.05 * torch.randn(queries, dim, generator=g)
    q = torch.nn.functional.normalize(q, dim=1)
    keys = np.arange(n, dtype=np.int64)
    t0 = time.perf_counter()
    ivf = ApproxIndex.build(x.numpy(), keys, kind="ivf-flat", nlist=round(4 * n ** 0.5))
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, exact_rows = exact_topk(x, q, 10)
    exact_ms = (time.perf_counter() - t0) * 1000 / queries
    rows = []
    key_rows = KeyRows(keys)
    for nprobe in (4, 16, 64):
        t0 = time.perf_counter()
        found = [ivf.search(qi[None].numpy(), 10, nprobe, key_rows=key_rows)[1][0] for qi in q]
        ms = (time.perf_counter() - t0) * 1000 / queries
        rows.append({"nprobe": nprobe, "recall_at_10": round(recall_at_k(found, exact_rows.numpy()), 3),
                     "ms_per_query": round(ms, 2)})
    return {"n": n, "dim": dim, "nlist": ivf.nlist, "build_s": round(build_s, 1),
            "exact_ms_per_query_batched": round(exact_ms, 2), "ivf": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--chunk", type=int, default=65536)
    ap.add_argument("--photos", type=int, default=400)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--height", type=int, default=768)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--approx", action="store_true", help="also measure the IVF index's recall vs exact")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = save_run(Path(tmp) / "run", "beit3-tiny-test", "mwa")
        res = {"cpu": cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__,
               "python": platform.python_version(),
               "query": bench_query(run_dir, args.n, args.dim, args.queries, args.chunk),
               "build": bench_build(run_dir, args.photos, args.width, args.height, args.workers)}
        if args.approx:
            res["approx"] = bench_approx(args.n, args.dim, args.queries)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        q, b = res["query"], res["build"]
        print(f"{res['cpu']} · {res['threads']} threads · torch {res['torch']}")
        print(f"text query over {q['n']:,} × {q['dim']}: encode {q['encode']['median_ms']} ms + search "
              f"{q['search']['median_ms']} ms = {q['total']['median_ms']} ms median (p95 {q['total']['p95_ms']} ms)")
        print(f"index build ({b['photos']} × {b['photo_px']}): {b['images_per_s']} photos/s decode+embed, "
              f"{b['wall_images_per_s']} photos/s wall incl. model load; no-op re-run {b['noop_rerun_s']} s")
        if "approx" in res:
            a = res["approx"]
            print(f"IVF ({a['nlist']} lists, built in {a['build_s']} s): " + "; ".join(
                f"nprobe {r['nprobe']}: recall@10 {r['recall_at_10']}, {r['ms_per_query']} ms" for r in a["ivf"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
