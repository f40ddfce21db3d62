"""Approximate nearest-neighbour search with faiss: IVF-Flat, IVF-FastScan (4-bit product codes scanned with SIMD
lookup tables), IVF-SQ8 (8-bit scalar codes) or IVF-PQ, chosen by size (`choose_kind`). Built by `mwa index
--approx`, persisted as `approx-<generation>.faiss` beside the index, updated in place on re-runs (new photos added, removed ones taken
out, no retraining until the archive outgrows the lists it was trained for) and used by `mwa search --nprobe N`.

faiss ids are stable keys derived from the photo's content hash (`image_key`), not embedding rows, so an update
never renumbers what is already in the lists; `ApproxIndex.search` maps keys back to the index's rows.
Vectors are L2-normalised, so inner product = cosine. Compressed kinds are re-ranked exactly against the
embeddings (the first `RERANK × k` candidates, at least `FASTSCAN_FETCH` for IVF-FastScan, whose 4-bit codes
order candidates more coarsely), which gives IVF-Flat's recall at the same nprobe while a query reads 1/16
(IVF-FastScan, IVF-PQ) or 1/4 (IVF-SQ8) of the bytes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from mwa_cli.errors import ConfigError
from mwa_cli.fileio import atomic_write

KINDS = ("ivf-flat", "ivf-fastscan", "ivf-sq8", "ivf-pq")
COMPRESSED_FROM = 100_000     # auto: IVF-FastScan from this many photos (below, exact search is fast anyway)
FILE_PREFIX = "approx-"
FILE_SUFFIX = ".faiss"
PQ_KINDS = ("ivf-fastscan", "ivf-pq")
MIN_PQ_ROWS = 10_000          # PQ codebooks (256 centroids per sub-vector) need about 39 × 256 training vectors
RETRAIN_GROWTH = 4.0          # retrain the lists once the archive is 4× what they were trained on
TRAIN_PER_LIST = 50           # k-means sample: 50 vectors per list (faiss warns below 39)
RERANK = 30                   # compressed kinds: exact re-ranking of the first RERANK × k candidates ...
FASTSCAN_FETCH = 1000         # ... and at least this many for IVF-FastScan (measured in docs/benchmarks.md)


def image_key(image_id: str) -> int:
    """The faiss id of a photo: its content id's first 15 hex digits (60 bits, a non-negative int64)."""
    return int(image_id[:15], 16)


def image_keys(image_ids: Sequence[str]) -> np.ndarray:
    return np.fromiter((image_key(i) for i in image_ids), dtype=np.int64, count=len(image_ids))


def default_nlist(n: int) -> int:
    """≈ 2·√N lists, at most N/39 (each list needs training vectors) and at least 1."""
    return int(max(1, min(round(2 * n ** 0.5), n // 39, 65536)))


def choose_kind(n: int) -> str:
    """auto: IVF-Flat below COMPRESSED_FROM photos; IVF-FastScan from there (d/4 bytes per photo like IVF-PQ,
    and the fastest scan here at IVF-Flat's recall once re-ranked: docs/benchmarks.md)."""
    return "ivf-flat" if n < COMPRESSED_FROM else "ivf-fastscan"


def _faiss():
    try:
        import faiss
    except ImportError:  # pragma: no cover - the [search] extra is installed with .[dev]
        raise ConfigError("approximate search needs faiss, which is not installed",
                          hint='pip install "mwa-cli[search]" (or faiss-cpu), or search without --approx/--nprobe'
                          ) from None
    return faiss


def _pq_m(dim: int, dims_per_code: int) -> int:
    """Sub-quantizers: `dims_per_code` dimensions each, a divisor of d. IVF-PQ: 4 (8-bit codes, 192 bytes per
    768-d photo, 1/16 of float32; 8 dimensions each lost half the recall@10 on clustered test vectors even after
    re-ranking). IVF-FastScan: 2 (4-bit codes, the same 192 bytes; 4 dimensions per 4-bit code lost 0.01–0.02
    recall@10 at 1M photos even after re-ranking 1000 candidates)."""
    m = max(1, dim // dims_per_code)
    while dim % m:
        m -= 1
    return m


@dataclass
class ApproxIndex:
    """A faiss IVF index over photo keys, and what it was built with."""

    kind: str
    index: object            # faiss.IndexIVFFlat | IndexIVFPQFastScan | IndexIVFScalarQuantizer | IndexIVFPQ
    trained_rows: int
    source: Path | None = None   # the file it was loaded from, while unchanged since (saved by a hard link)

    @property
    def nlist(self) -> int:
        return int(self.index.nlist)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @classmethod
    def build(cls, vectors: np.ndarray, keys: np.ndarray, *, kind: str = "auto", nlist: int | None = None,
              seed: int = 0) -> "ApproxIndex":
        """Train the lists (k-means on a sample of TRAIN_PER_LIST × nlist vectors) and add every vector."""
        faiss = _faiss()
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        n, d = x.shape
        if kind == "auto":
            kind = choose_kind(n)
        if kind not in KINDS:
            raise ConfigError(f"unknown approximate index kind {kind!r}", hint=f"choose auto, {', '.join(KINDS)}")
        if kind in PQ_KINDS and n < MIN_PQ_ROWS:
            raise ConfigError(f"an {kind} index needs at least {MIN_PQ_ROWS:,} photos to learn its codebooks "
                              f"(this index has {n:,})", hint="use --approx-kind ivf-flat (or auto)")
        nlist = int(min(nlist or default_nlist(n), n))
        quantizer = faiss.IndexFlatIP(d)
        if kind == "ivf-flat":
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        elif kind == "ivf-sq8":
            index = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit,
                                                  faiss.METRIC_INNER_PRODUCT)
        elif kind == "ivf-fastscan":
            index = faiss.IndexIVFPQFastScan(quantizer, d, nlist, _pq_m(d, 2), 4, faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexIVFPQ(quantizer, d, nlist, _pq_m(d, 4), 8, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.cp.max_points_per_centroid = TRAIN_PER_LIST
        index.cp.min_points_per_centroid = 1  # small archives: fewer training points than faiss likes is fine
        index.cp.niter = 10
        sample = max(nlist * TRAIN_PER_LIST, MIN_PQ_ROWS if kind in PQ_KINDS else 0)
        rng = np.random.default_rng(seed)
        train = x if n <= sample else x[np.sort(rng.choice(n, sample, replace=False))]
        index.train(train)
        index.add_with_ids(x, np.asarray(keys, dtype=np.int64))
        return cls(kind=kind, index=index, trained_rows=n)

    def add(self, vectors: np.ndarray, keys: np.ndarray) -> None:
        if len(keys):
            self.source = None
            self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(keys, np.int64))

    def remove(self, keys: np.ndarray) -> int:
        if not len(keys):
            return 0
        faiss = _faiss()
        self.source = None
        return int(self.index.remove_ids(faiss.IDSelectorBatch(np.asarray(keys, dtype=np.int64))))

    def needs_retraining(self) -> bool:
        """Lists trained on far fewer photos than it now holds get long and slow: rebuild them."""
        return self.ntotal > RETRAIN_GROWTH * max(self.trained_rows, 1)

    def save(self, path: str | Path) -> None:
        """Write to a temporary name then rename (a reader never sees half a file); an index unchanged since it
        was loaded is hard-linked instead of rewritten (a no-op re-run of a million photos writes nothing)."""
        faiss = _faiss()

        def write(tmp: str) -> None:
            if self.source is not None and self.source.is_file():
                try:
                    os.unlink(tmp)  # the link takes the temporary name
                    os.link(self.source, tmp)
                    return
                except OSError:  # a file system without hard links
                    pass
            faiss.write_index(self.index, tmp)

        atomic_write(path, write)

    @classmethod
    def load(cls, path: str | Path, *, kind: str, trained_rows: int) -> "ApproxIndex":
        """Read a file written by `save`. ValueError when it is not a faiss IVF index of that kind."""
        faiss = _faiss()
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise ValueError(f"not a faiss index ({str(exc).splitlines()[0][:120]})") from None
        expected = {"ivf-flat": faiss.IndexIVFFlat, "ivf-fastscan": faiss.IndexIVFPQFastScan,
                    "ivf-sq8": faiss.IndexIVFScalarQuantizer, "ivf-pq": faiss.IndexIVFPQ}[kind]
        if not isinstance(index, expected):
            raise ValueError(f"holds a {type(index).__name__}, not the {kind} index that index.json records")
        return cls(kind=kind, index=index, trained_rows=int(trained_rows), source=Path(path))

    def search(self, queries: np.ndarray, k: int, nprobe: int, *, key_rows: "KeyRows",
               vectors: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores [Q, k], index rows [Q, k]), padded with -inf / -1 when fewer than k photos were reached.
        Compressed kinds' candidates are re-ranked with the exact `vectors` (the index's embeddings) when given."""
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        self.index.nprobe = int(min(nprobe, self.nlist))
        fetch = rerank_depth(self.kind, k) if vectors is not None else k
        scores, keys = self.index.search(q, int(min(fetch, max(self.ntotal, 1))))
        rows = key_rows.rows(keys)
        if fetch != k:
            scores, rows = _rerank(q, rows, vectors, k)
        out_s = np.full((q.shape[0], k), -np.inf, dtype=np.float32)
        out_r = np.full((q.shape[0], k), -1, dtype=np.int64)
        kk = min(k, rows.shape[1])
        out_s[:, :kk], out_r[:, :kk] = scores[:, :kk], rows[:, :kk]
        out_s[out_r < 0] = -np.inf
        return out_s, out_r


def rerank_depth(kind: str, k: int) -> int:
    """How many candidates a search of `kind` fetches for exact re-ranking (k: none, for IVF-Flat)."""
    if kind == "ivf-flat":
        return k
    return max(k * RERANK, FASTSCAN_FETCH) if kind == "ivf-fastscan" else k * RERANK


def _rerank(q: np.ndarray, rows: np.ndarray, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    s = np.full(rows.shape, -np.inf, dtype=np.float32)
    for i in range(q.shape[0]):
        ok = rows[i] >= 0
        s[i, ok] = vectors[rows[i, ok]] @ q[i]
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, 1), np.take_along_axis(rows, order, 1)


class KeyRows:
    """Maps faiss keys back to the index's embedding rows (vectorised: sorted keys + searchsorted)."""

    def __init__(self, keys: np.ndarray):
        keys = np.asarray(keys, dtype=np.int64)
        self.order = np.argsort(keys, kind="stable")
        self.sorted = keys[self.order]

    def rows(self, keys: np.ndarray) -> np.ndarray:
        pos = np.clip(np.searchsorted(self.sorted, keys), 0, max(len(self.sorted) - 1, 0))
        if not len(self.sorted):
            return np.full(keys.shape, -1, dtype=np.int64)
        hit = (self.sorted[pos] == keys) & (keys >= 0)
        return np.where(hit, self.order[pos], -1)


def approx_file(generation: str) -> str:
    """The file name of a generation's approximate index (old generations' files are removed after the new
    index.json is written)."""
    return f"{FILE_PREFIX}{generation[:16]}{FILE_SUFFIX}"


def recall_at_k(approx_rows, exact_rows) -> float:
    """Mean fraction of the exact top-k found by the approximate top-k (0–1)."""
    hits = [len(set(np.asarray(a).tolist()) & set(np.asarray(e).tolist())) / max(1, len(e))
            for a, e in zip(approx_rows, exact_rows)]
    return float(sum(hits) / max(1, len(hits)))
