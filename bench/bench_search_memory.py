"""Memory of `mwa search` over an archive: peak resident memory of loading an index and running text queries.

`build` writes a synthetic index folder in mwa's format (N × d clustered unit vectors, bench_approx.py's
generator; default 1M × 768 = 2.9 GiB of float32 embeddings) with an IVF-FastScan approximate index and the
beit3-tiny-test adapter folder whose text encoder makes the queries. `measure` runs in a fresh process: load
the index (`SearchIndex.load`, which also verifies the files' sha256) and answer `--queries` text queries with
`mwa_cli.search.query.search` (exact, or `--nprobe N` through the IVF), reporting the peak resident set
(VmHWM), its anonymous and file-backed parts at the end, the load time and ms per query.

    nice -n 5 python bench/bench_search_memory.py build --out /tmp/mem_idx
    nice -n 5 python bench/bench_search_memory.py measure --index /tmp/mem_idx              # exact
    nice -n 5 python bench/bench_search_memory.py measure --index /tmp/mem_idx --nprobe 64  # IVF-FastScan

The tiny text encoder embeds 64-d; a fixed random projection (seed 0) maps its output to the index's d, as
bench_search.py does, so the query work is a real tokenizer + encoder pass.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from benchlib import cpu_name, save_run


def _status_kib() -> dict[str, int]:
    """VmHWM (peak resident), VmRSS, RssAnon and RssFile of this process, KiB (Linux /proc/self/status)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key = line.split(":", 1)[0]
        if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            out[key] = int(line.split()[1])
    return out


def _gib(kib: int) -> float:
    return round(kib / 2**20, 2)


def build(out: Path, n: int, dim: int) -> dict[str, Any]:
    """The index folder `out` (written with mwa's own writer) and its adapter folder `out`/../`out.name`_run."""
    import pandas as pd
    import torch
    from bench_approx import synthetic

    from mwa_cli import __version__
    from mwa_cli.search.approx import ApproxIndex, approx_file, image_keys
    from mwa_cli.search.model import adapter_identity
    from mwa_cli.search.store import MANIFEST_COLUMNS, SCHEMA_VERSION, write_index

    run = save_run(out.parent / f"{out.name}_run", "beit3-tiny-test", "mwa")
    t0 = time.perf_counter()
    x, _ = synthetic(n, dim, 1)
    ids = [f"{i:016x}" for i in range(1, n + 1)]
    manifest = pd.DataFrame({"path": [f"photos/{i:07d}.jpg" for i in range(n)], "image_id": ids, "row": range(n),
                             "size": 100_000, "mtime_ns": 1, "width": 1024, "height": 768}, columns=MANIFEST_COLUMNS)
    t1 = time.perf_counter()
    ivf = ApproxIndex.build(x, image_keys(ids), kind="ivf-fastscan")
    build_s = time.perf_counter() - t1
    generation = f"{np.random.default_rng(0).integers(1 << 62):032x}"
    meta = {"schema_version": SCHEMA_VERSION, "generation": generation, "identity": adapter_identity(run),
            "adapter": str(run.resolve()), "model": None, "method": "mwa", "weights": None, "tokenizer": None,
            "source": str(out.parent / "photos"), "image_size": 32, "dim": dim, "counts": {"images": n},
            "captions": None, "max_pixels": None, "mwa_version": __version__,
            "approx": {"kind": ivf.kind, "file": approx_file(generation), "nlist": ivf.nlist, "nlist_option": None,
                       "kind_option": "ivf-fastscan", "rows": ivf.ntotal, "trained_rows": ivf.trained_rows}}
    rejected = pd.DataFrame(columns=["path", "row", "reason"])
    out.mkdir(parents=True, exist_ok=True)
    write_index(out, torch.from_numpy(x), manifest, None, None, rejected, meta, ivf=ivf)
    return {"index": str(out), "run": str(run), "n": n, "dim": dim, "nlist": ivf.nlist,
            "ivf_build_s": round(build_s, 1), "total_s": round(time.perf_counter() - t0, 1)}


class _Projected:
    """The tiny adapter's text encoder followed by a fixed projection to the index's dimension."""

    def __init__(self, model: Any, dim: int):
        import torch

        self.model, self.tokenizer = model, model.tokenizer
        g = torch.Generator().manual_seed(0)
        self.proj = torch.randn(model.model.config.embed_dim, dim, generator=g)

    def encode_texts(self, texts: list[str]) -> Any:
        import torch

        return torch.nn.functional.normalize(self.model.encode_texts(texts) @ self.proj, dim=1)


def measure(index_dir: Path, queries: int, nprobe: int | None) -> dict[str, Any]:
    import torch

    from mwa_cli.search.model import load_search_model
    from mwa_cli.search.query import search
    from mwa_cli.search.store import SearchIndex

    meta = json.loads((index_dir / "index.json").read_text(encoding="utf-8"))
    sm = load_search_model(meta["adapter"], device="cpu")
    texts = [f"a long scratch on the upper left of plate {i}" for i in range(queries)]
    sm.encode_texts(texts[:2])
    before = _status_kib()
    t0 = time.perf_counter()
    index = SearchIndex.load(index_dir)
    if nprobe is not None:
        index.ivf()
    load_s = time.perf_counter() - t0
    after_load = _status_kib()
    model = _Projected(sm, int(meta["dim"]))
    times = []
    for text in texts:
        t1 = time.perf_counter()
        search(index, model, text=text, top=10, nprobe=nprobe)
        times.append((time.perf_counter() - t1) * 1000)
    end = _status_kib()
    times.sort()
    return {"index": str(index_dir), "n": index.n_images, "dim": int(meta["dim"]),
            "search": "exact" if nprobe is None else f"{meta['approx']['kind']} nprobe {nprobe}",
            "queries": queries, "load_s": round(load_s, 2),
            "ms_per_query_median": round(statistics.median(times), 2),
            "ms_per_query_p95": round(times[int(0.95 * (len(times) - 1))], 2),
            "peak_rss_gib": _gib(end["VmHWM"]), "peak_rss_before_load_gib": _gib(before["VmHWM"]),
            "rss_after_load_gib": {"anon": _gib(after_load["RssAnon"]), "file": _gib(after_load["RssFile"])},
            "rss_end_gib": {"anon": _gib(end["RssAnon"]), "file": _gib(end["RssFile"])},
            "embeddings_gib": round(index.n_images * int(meta["dim"]) * 4 / 2**30, 2),
            "cpu": cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="write the synthetic index folder")
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--n", type=int, default=1_000_000)
    b.add_argument("--dim", type=int, default=768)
    m = sub.add_parser("measure", help="load it and query it in this (fresh) process")
    m.add_argument("--index", type=Path, required=True)
    m.add_argument("--queries", type=int, default=100)
    m.add_argument("--nprobe", type=int, default=None, help="search the IVF with N lists [default: exact]")
    args = ap.parse_args(argv)
    res = build(args.out, args.n, args.dim) if args.cmd == "build" else measure(args.index, args.queries, args.nprobe)
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
