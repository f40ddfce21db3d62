"""Approximate search (faiss, `mwa_cli.search.approx`) against exact search, on the CPU.

1. Real embeddings: beit3-mini (built-in weights, no adapter) embeds sample_data's photos through `build_index`
   and its captions are the text queries; recall@10 of IVF-Flat vs exact for several nprobe.
2. Synthetic archive: N × d clustered unit vectors (default 1M × 768, the generator of bench_search.py); build
   time, resident memory added by the index, ms per query (one query at a time, as a served search runs) and
   recall@10 vs exact for several nprobe; plus the time to encode one caption with beit3-mini (PyTorch and
   its ONNX export), which a text query adds.

    nice -n 5 python bench/bench_approx.py --out bench_approx_cpu.json --kind auto,ivf-sq8   # both parts
    python bench/bench_approx.py --out small.json --n 100000 --skip-real        # quicker
    nice -n 5 python bench/bench_approx.py --out one.json --kind auto --threads 1   # one thread for everything
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from benchlib import cpu_name, save_run

REPO = Path(__file__).resolve().parents[1]


def _rss_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _sweep(ivf, vectors: np.ndarray, queries: np.ndarray, exact_rows: np.ndarray, key_rows, nprobes) -> list:
    from mwa_cli.search.approx import recall_at_k

    out = []
    for nprobe in nprobes:
        if nprobe > ivf.nlist:
            continue
        ivf.search(queries[:5], 10, nprobe, key_rows=key_rows, vectors=vectors)  # warm-up
        times, rows = [], []
        for q in queries:
            t0 = time.perf_counter()
            _, r = ivf.search(q[None], 10, nprobe, key_rows=key_rows, vectors=vectors)
            times.append((time.perf_counter() - t0) * 1000)
            rows.append(r[0])
        times.sort()
        out.append({"nprobe": nprobe, "recall_at_10": round(recall_at_k(rows, exact_rows), 4),
                    "ms_per_query_median": round(statistics.median(times), 3),
                    "ms_per_query_p95": round(times[int(0.95 * (len(times) - 1))], 3)})
    return out


def bench_real(tmp: Path) -> dict:
    from mwa_cli.search.approx import ApproxIndex, KeyRows
    from mwa_cli.search.build import build_index
    from mwa_cli.search.model import load_search_model
    from mwa_cli.search.query import exact_topk
    from mwa_cli.search.store import SearchIndex

    run = save_run(tmp / "mini", "beit3-mini", "frozen")
    build_index(REPO / "mwa_cli" / "sample_data" / "images", run, tmp / "idx", device="cpu")
    idx = SearchIndex.load(tmp / "idx")
    sm = load_search_model(run, device="cpu")
    import pandas as pd

    captions = pd.read_csv(REPO / "mwa_cli" / "sample_data" / "captions.csv")["caption"].astype(str).tolist()
    q = sm.encode_texts(captions).numpy()
    x = np.array(idx.images)
    _, exact = exact_topk(idx.images, torch.from_numpy(q), 10)
    keys = np.arange(len(x), dtype=np.int64)
    ivf = ApproxIndex.build(x, keys, kind="ivf-flat")
    return {"images": len(x), "text_queries": len(q), "dim": int(x.shape[1]), "kind": ivf.kind, "nlist": ivf.nlist,
            "sweep": _sweep(ivf, x, q, exact.numpy(), KeyRows(keys), (1, 2, 4, 8, ivf.nlist))}


def synthetic(n: int, dim: int, queries: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """bench_search.py's clustered vectors (1000 centres, noise 0.08 per dimension), built in float32 chunks."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1000, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = np.empty((n, dim), dtype=np.float32)
    for c0 in range(0, n, 100_000):
        m = min(100_000, n - c0)
        part = centres[rng.integers(0, 1000, m)] + 0.08 * rng.standard_normal((m, dim), dtype=np.float32)
        x[c0:c0 + m] = part / np.linalg.norm(part, axis=1, keepdims=True)
    q = x[rng.integers(0, n, queries)] + 0.05 * rng.standard_normal((queries, dim), dtype=np.float32)
    return x, (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def bench_synthetic(n: int, dim: int, queries: int, kinds: list[str], nprobes: tuple[int, ...]) -> list[dict]:
    """One archive, one exact reference, then each kind built and swept in turn (back to back, same load)."""
    from mwa_cli.search.approx import ApproxIndex, KeyRows
    from mwa_cli.search.query import exact_topk

    x, q = synthetic(n, dim, queries)
    keys = np.arange(n, dtype=np.int64)
    t0 = time.perf_counter()
    _, exact = exact_topk(torch.from_numpy(x), torch.from_numpy(q), 10)
    exact_ms = (time.perf_counter() - t0) * 1000 / queries
    out = []
    for kind in kinds:
        rss0 = _rss_gib()
        t0 = time.perf_counter()
        ivf = ApproxIndex.build(x, keys, kind=kind)
        build_s = time.perf_counter() - t0
        rss1 = _rss_gib()
        out.append({"n": n, "dim": dim, "queries": queries, "kind": ivf.kind, "nlist": ivf.nlist,
                    "build_s": round(build_s, 1), "index_rss_gib": round(rss1 - rss0, 2),
                    "vectors_gib": round(x.nbytes / 2**30, 2), "exact_ms_per_query_batched": round(exact_ms, 2),
                    "sweep": _sweep(ivf, x, q, exact.numpy(), KeyRows(keys), nprobes)})
        print(json.dumps(out[-1]), flush=True)
        del ivf
    return out


def text_encode_ms(tmp: Path, threads: int) -> dict:
    """Median ms to encode one caption with beit3-mini + MWA: mwa's PyTorch model and its `mwa export` graphs."""
    from mwa_cli.export.onnx import export_onnx
    from mwa_cli.export.runtime import ExportedModel
    from mwa_cli.search.model import load_search_model

    run = save_run(tmp / "mini_t", "beit3-mini", "frozen")
    sm = load_search_model(run, device="cpu")
    em = ExportedModel.load(export_onnx(run, tmp / "mini_t_onnx")["export"], threads=threads)
    texts = [f"a long scratch on the upper left of plate {i}" for i in range(50)]
    out = {"backbone": "beit3-mini"}
    for name, model in (("pytorch_ms", sm), ("onnxruntime_ms", em)):
        for t in texts[:5]:
            model.encode_texts([t])
        times = []
        for t in texts:
            t0 = time.perf_counter()
            model.encode_texts([t])
            times.append((time.perf_counter() - t0) * 1000)
        out[name] = round(statistics.median(times), 2)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="JSON file to write")
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--kind", default="auto", help="comma-separated kinds for the synthetic archive: auto, or "
                    "any of mwa_cli.search.approx.KINDS (each built and swept in turn)")
    ap.add_argument("--nprobes", default="16,32,64,128", help="comma-separated nprobe values")
    ap.add_argument("--threads", type=int, default=None, help="threads for torch, faiss and onnxruntime "
                    "[default: their own defaults]")
    ap.add_argument("--skip-real", action="store_true")
    ap.add_argument("--skip-synthetic", action="store_true")
    args = ap.parse_args(argv)
    import faiss

    if args.threads:
        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)

    res: dict = {"cpu": cpu_name(), "threads": torch.get_num_threads(), "faiss": faiss.__version__,
                 "faiss_threads": faiss.omp_get_max_threads(), "torch": torch.__version__,
                 "python": platform.python_version()}
    with tempfile.TemporaryDirectory() as tmp:
        res["text_encode"] = text_encode_ms(Path(tmp), args.threads or 0)
        if not args.skip_real:
            res["real"] = bench_real(Path(tmp))
            print(json.dumps(res["real"], indent=2), flush=True)
    if not args.skip_synthetic:
        res["synthetic"] = bench_synthetic(args.n, args.dim, args.queries, args.kind.split(","),
                                           tuple(int(p) for p in args.nprobes.split(",")))
        enc = res["text_encode"]["onnxruntime_ms"]
        for row in (r for kind in res["synthetic"] for r in kind["sweep"]):
            row["text_query_ms_median"] = round(enc + row["ms_per_query_median"], 2)  # encode a caption + search
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
