"""Optional approximate search: an inverted-file index (IVF-flat) in plain torch, no extra dependency.

k-means (spherical, on L2-normalised embeddings) splits the rows into `nlist` lists; a query scores the list
centroids, visits the `nprobe` best lists and ranks their rows exactly. Cost per query ≈ nlist + N·nprobe/nlist
dot products instead of N. Worth it only from millions of photos: at 100k the exact search already meets the
50 ms target on 2 CPU cores (docs/benchmarks.md). Recall against `exact_topk` is measured by
`recall_at_k` (bench/bench_search.py --approx). Built by `mwa index --approx` (persisted as `ivf.safetensors`,
see `save` / `load`) and used by `mwa search --nprobe N`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import torch

from mwa_cli.search.query import exact_topk

IVF_FILE = "ivf.safetensors"
IVF_KIND = "ivf-flat"


@dataclass
class IVFIndex:
    centroids: torch.Tensor   # [nlist, d]
    order: torch.Tensor       # [N] row ids grouped by list
    offsets: torch.Tensor     # [nlist + 1] start of each list in `order`
    matrix: torch.Tensor      # [N, d] rows grouped by list (matrix_orig[order])

    @classmethod
    def build(cls, matrix: torch.Tensor, nlist: int | None = None, iters: int = 10, seed: int = 0,
              sample: int = 65536) -> "IVFIndex":
        n = matrix.shape[0]
        nlist = int(nlist or max(1, min(4096, round(4 * n ** 0.5))))
        nlist = min(nlist, n)
        g = torch.Generator().manual_seed(seed)
        train = matrix[torch.randperm(n, generator=g)[:max(sample, nlist)]].float()
        cent = train[torch.randperm(train.shape[0], generator=g)[:nlist]].clone()
        for _ in range(iters):
            assign = _assign(train, cent)
            sums = torch.zeros_like(cent).index_add_(0, assign, train)
            counts = torch.bincount(assign, minlength=nlist)
            empty = counts == 0
            sums[empty] = cent[empty]  # keep empty lists where they were
            cent = torch.nn.functional.normalize(sums, dim=1)
        assign = _assign(matrix.float(), cent)
        order = torch.argsort(assign, stable=True)
        counts = torch.bincount(assign, minlength=nlist)
        offsets = torch.zeros(nlist + 1, dtype=torch.long)
        offsets[1:] = torch.cumsum(counts, 0)
        return cls(centroids=cent, order=order, offsets=offsets, matrix=matrix[order].contiguous())

    @property
    def nlist(self) -> int:
        return int(self.centroids.shape[0])

    def save(self, path: str | Path, generation: str) -> None:
        """Write centroids, order and offsets (the grouped matrix is rebuilt from the index's embeddings on load)
        to a temporary name then os.replace; metadata `generation` ties the file to index.json."""
        from safetensors.torch import save_file

        path = Path(path)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            save_file({"centroids": self.centroids.float().contiguous(), "order": self.order.long().contiguous(),
                       "offsets": self.offsets.long().contiguous()}, str(tmp),
                      metadata={"generation": generation, "kind": IVF_KIND})
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: str | Path, matrix: torch.Tensor, generation: str | None = None) -> "IVFIndex":
        """Read a file written by `save` for the embeddings `matrix` [N, d]. ValueError when it does not match
        them (other generation, other row count or dimension, malformed lists)."""
        from safetensors.torch import safe_open

        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            cent, order, offsets = (fh.get_tensor(k) for k in ("centroids", "order", "offsets"))
        if generation is not None and meta.get("generation") != generation:
            raise ValueError("written by another `mwa index` run than the embeddings")
        n = matrix.shape[0]
        if cent.dim() != 2 or cent.shape[1] != matrix.shape[1] or order.shape != (n,) \
                or offsets.shape != (cent.shape[0] + 1,) or int(offsets[0]) != 0 or int(offsets[-1]) != n \
                or bool((offsets[1:] < offsets[:-1]).any()) \
                or not torch.equal(torch.sort(order).values, torch.arange(n)):
            raise ValueError("its lists do not match the embeddings")
        return cls(centroids=cent.float(), order=order.long(), offsets=offsets.long(),
                   matrix=matrix[order].contiguous())

    def search(self, queries: torch.Tensor, k: int, nprobe: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores [Q,k], original rows [Q,k]); fewer than k results are padded with -inf / -1."""
        if queries.dim() == 1:
            queries = queries[None]
        nprobe = min(nprobe, self.centroids.shape[0])
        _, lists = torch.topk(queries.float() @ self.centroids.T, nprobe, dim=1)
        out_s = torch.full((queries.shape[0], k), float("-inf"))
        out_i = torch.full((queries.shape[0], k), -1, dtype=torch.long)
        for qi in range(queries.shape[0]):
            spans = [torch.arange(self.offsets[li], self.offsets[li + 1]) for li in lists[qi].tolist()]
            cand = torch.cat(spans)
            if cand.numel() == 0:
                continue
            s, pos = exact_topk(self.matrix[cand], queries[qi:qi + 1], k)
            out_s[qi, :s.shape[1]] = s[0]
            out_i[qi, :s.shape[1]] = self.order[cand[pos[0]]]
        return out_s, out_i


def _assign(x: torch.Tensor, cent: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    return torch.cat([torch.argmax(x[i:i + chunk] @ cent.T, dim=1) for i in range(0, x.shape[0], chunk)])


def recall_at_k(approx_rows: torch.Tensor, exact_rows: torch.Tensor) -> float:
    """Mean fraction of the exact top-k found by the approximate top-k (0–1)."""
    hits = [len(set(a.tolist()) & set(e.tolist())) / max(1, e.numel()) for a, e in zip(approx_rows, exact_rows)]
    return float(sum(hits) / max(1, len(hits)))
