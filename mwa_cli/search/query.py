"""Exact nearest-neighbour search (chunked matrix product + top-k) and the text / photo query front ends."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mwa_cli.errors import EXIT_DATA, ConfigError, DataError
from mwa_cli.finite import require_finite
from mwa_cli.models.text_cut import truncation_warning
from mwa_cli.printable import printable
from mwa_cli.safe_open import PHOTO_LIMIT, read_bytes
from mwa_cli.search.model import SearchModel
from mwa_cli.search.store import SearchIndex, line_version_warning
from mwa_cli.similarity import similarity

BLOCK_BYTES = 192 << 20  # embeddings scored at a time by default: 65,536 rows of 768-d float32


def exact_topk(matrix: torch.Tensor | np.ndarray, queries: torch.Tensor, k: int,
               chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-`k` inner products of each query against the rows of `matrix`: (scores [Q,k], rows [Q,k]).

    Rows are scored `chunk` at a time (default: BLOCK_BYTES of them), so memory stays at Q×chunk scores whatever
    the index size; a memory-mapped `matrix` (an index's embeddings) is read block by block, never copied. Each
    chunk's top-k is merged into the running top-k. Ties keep the lower row first (as a stable sort of -score would).
    Embeddings are L2-normalised, so the inner product is the cosine similarity. Multi-vector rows or queries
    ([N, Q, d], BLIP-2 images) score their best vector (`mwa_cli.similarity`).
    """
    if queries.dim() == 1:
        queries = queries[None]
    n = matrix.shape[0]
    k = max(0, min(int(k), n))
    q = queries.to(matrix.dtype if isinstance(matrix, torch.Tensor) else torch.float32)
    if k == 0:
        return torch.zeros((q.shape[0], 0)), torch.zeros((q.shape[0], 0), dtype=torch.long)
    best_s: torch.Tensor | None = None
    best_i: torch.Tensor | None = None
    if chunk is None:
        chunk = max(1, BLOCK_BYTES // (4 * int(np.prod(matrix.shape[1:]))))
    elif matrix.ndim == 3:  # Q scores per row: keep the block's size
        chunk = max(1, chunk // matrix.shape[1])
    for c0 in range(0, n, chunk):
        block = _rows_tensor(matrix[c0:c0 + chunk])
        s = similarity(q, block).float()
        kk = min(k, s.shape[1])
        vs, ix = torch.topk(s, kk, dim=1)
        ix = ix + c0
        if best_s is None:
            best_s, best_i = vs, ix
        else:
            cat_s = torch.cat([best_s, vs], 1)
            cat_i = torch.cat([best_i, ix], 1)
            vs2, pos = torch.topk(cat_s, min(k, cat_s.shape[1]), dim=1)  # k may exceed the rows seen so far
            best_s, best_i = vs2, torch.gather(cat_i, 1, pos)
    assert best_s is not None and best_i is not None
    # deterministic order among equal scores: lower row first
    order = torch.argsort(best_i, dim=1, stable=True)
    best_s, best_i = torch.gather(best_s, 1, order), torch.gather(best_i, 1, order)
    order = torch.argsort(-best_s, dim=1, stable=True)
    return torch.gather(best_s, 1, order), torch.gather(best_i, 1, order)


def _rows_tensor(rows: torch.Tensor | np.ndarray) -> torch.Tensor:
    """A tensor view of a block of rows, without a copy. A read-only memory map becomes a tensor through DLPack
    (torch.from_numpy would warn); the tensor is only read here: writing into it would crash the process."""
    if isinstance(rows, torch.Tensor):
        return rows
    return torch.from_dlpack(np.ascontiguousarray(rows, dtype=np.float32))


# ------------------------------------------------------------------------------------------------ queries
def load_query_image(path: str | Path, size: int, max_pixels: int | None = None) -> np.ndarray:
    """A query photo decoded with prepare's rules (EXIF, any mode → RGB, pixel cap), as uint8 [1, S, S, 3]."""
    from mwa_cli.data.images import DEFAULT_MAX_PIXELS, ImageReject, open_checked, square_resize

    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"query image not found: {printable(path)}", hint="give the path of a photo file",
                        exit_code=EXIT_DATA)
    data = read_bytes(path, limit=PHOTO_LIMIT, what="query image")  # never a FIFO, a device or a huge file
    try:
        im, _ = open_checked(data, path.name, int(max_pixels or DEFAULT_MAX_PIXELS), draft_size=size)
        arr = square_resize(im, size)
    except ImageReject as rej:
        raise DataError(f"the query image {printable(path)} cannot be used: {rej.reason}",
                        hint="give a JPEG, PNG, TIFF, BMP or WebP photo", exit_code=EXIT_DATA) from None
    return arr[None]


def _image_hits(index: SearchIndex, scores: torch.Tensor, rows: torch.Tensor) -> list[dict[str, Any]]:
    out = []
    for rank, (s, r) in enumerate(zip(scores.tolist(), rows.tolist()), 1):
        paths = index.row_paths[r]
        out.append({"rank": rank, "score": round(float(s), 6), "path": paths[0] if paths else None,
                    "image_id": index.row_ids[r], "duplicates": paths[1:]})
    return out


def _caption_hits(index: SearchIndex, scores: torch.Tensor, rows: torch.Tensor) -> list[dict[str, Any]]:
    caps = index.captions
    assert caps is not None
    out = []
    for rank, (s, r) in enumerate(zip(scores.tolist(), rows.tolist()), 1):
        row = caps.iloc[r]
        out.append({"rank": rank, "score": round(float(s), 6), "caption": str(row["caption"]),
                    "label": str(row["label"]), "image_id": str(row["image_id"]), "path": str(row["path"])})
    return out


def check_query(*, text: str | None = None, image: str | Path | None = None, top: int = 10,
                nprobe: int | None = None, index: SearchIndex | None = None) -> None:
    """The one place where a query's arguments are checked (by `search`, and by `mwa search` before it loads the
    model). With `index`, `nprobe` also needs the index's IVF (which gets loaded)."""
    if text is None and image is None:
        raise ConfigError("nothing to search for", hint='give words ("crack near the weld") or --image PHOTO')
    if text is not None and image is not None:
        raise ConfigError("give either words or --image, not both")
    if text is not None and not text.strip():
        raise ConfigError("the text query is empty", hint='e.g. mwa search "a scratch on the upper left" '
                                                          "--index INDEX_DIR")
    if top < 1:
        raise ConfigError(f"--top must be at least 1 (got {top})")
    if nprobe is not None:
        if nprobe < 1:
            raise ConfigError(f"--nprobe must be at least 1 (got {nprobe})")
        if index is not None:
            index.ivf()  # ConfigError with a hint when the index has none


def search(index: SearchIndex, sm: SearchModel, *, text: str | None = None, image: str | Path | None = None,
           top: int = 10, nprobe: int | None = None) -> dict[str, Any]:
    """One query → the JSON-ready result: nearest images (and nearest captions for a photo query when the
    index holds a caption set), with cosine scores and timings.

    Exact by default; `nprobe` searches the index's faiss IVF instead, visiting the `nprobe` closest lists
    (IVF-Flat with nprobe ≥ nlist gives the exact results). `result["search"]` says which ran. Captions are always searched exactly."""
    check_query(text=text, image=image, top=top, nprobe=nprobe, index=index)
    warnings: list[str] = []
    t0 = time.perf_counter()
    if text is not None:
        unknown = sm.tokenizer.unknown_characters(text) if hasattr(sm.tokenizer, "unknown_characters") else []
        if unknown:
            shown = "".join(dict.fromkeys(unknown))[:20]
            warnings.append(f"{len(unknown)} character(s) of the query are unknown to the tokenizer ({shown}); "
                            "results may ignore them")
        q = torch.as_tensor(sm.encode_texts([text]))
        cut = truncation_warning()
        if cut:
            warnings.append(cut)
        query: dict[str, Any] = {"kind": "text", "text": text}
    else:
        px = load_query_image(image, sm.image_size, index.meta.get("max_pixels"))  # type: ignore[arg-type]
        q = torch.as_tensor(sm.encode_pixels(px))
        query = {"kind": "image", "path": str(image)}
    t1 = time.perf_counter()
    require_finite(q, "the query's embedding", "the adapter or exported model is damaged: train or export it again")
    if q.shape[-1] != index.images.shape[-1]:
        raise DataError(f"the model's embeddings have {q.shape[-1]} dimensions, the index's {index.images.shape[-1]}",
                        hint="rebuild the index with this adapter", exit_code=EXIT_DATA)
    s, r, how = _photo_topk(index, q, top, nprobe)
    result: dict[str, Any] = {"query": query, "index": str(index.path), "source": str(index.source),
                              "top": top, "search": how, "images": _image_hits(index, s[0], r[0])}
    if query["kind"] == "image" and index.caption_emb is not None:
        cs, cr = exact_topk(index.caption_emb, q, top)
        _require_finite_scores(cs, index)
        result["captions"] = _caption_hits(index, cs[0], cr[0])
    t2 = time.perf_counter()
    result["timing_ms"] = {"encode": round((t1 - t0) * 1000, 2), "search": round((t2 - t1) * 1000, 2)}
    stale = line_version_warning(index.meta)
    result["warnings"] = warnings + ([stale] if stale else [])
    result["n_images"] = index.n_images
    return result


def _photo_topk(index: SearchIndex, q: torch.Tensor, top: int, nprobe: int | None
                ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Scores and rows of the `top` indexed photos closest to query `q` [1, d]: exact, or through the approximate
    index with `nprobe` lists (then possibly fewer rows, when the visited lists hold fewer photos)."""
    if nprobe is None:
        s, r = exact_topk(index.images, q, top)
        how: dict[str, Any] = {"method": "exact"}
    else:
        ivf = index.ivf()
        s_np, r_np = ivf.search(q.numpy(), top, nprobe=nprobe, key_rows=index.key_rows(), vectors=index.images)
        keep = r_np[0] >= 0
        how = {"method": ivf.kind, "nprobe": min(nprobe, ivf.nlist), "nlist": ivf.nlist}
        s, r = torch.from_numpy(s_np[:, keep]), torch.from_numpy(r_np[:, keep])
    _require_finite_scores(s, index)
    return s, r, how


def _require_finite_scores(scores: torch.Tensor, index: SearchIndex) -> None:
    """A NaN or infinite embedding in the index ranks first (topk puts NaN above every number): the scores of the
    top results show it, and the search is refused rather than answered with `nan`."""
    require_finite(scores, f"the search index {printable(index.path)} (its embeddings)",
                   "rebuild it: `mwa index PHOTOS_DIR --adapter RUN_DIR --out INDEX_DIR --rebuild`")


def similar(index: SearchIndex, image_id: str, *, top: int = 10, nprobe: int | None = None) -> dict[str, Any]:
    """The photos (and captions, when the index holds a caption set) closest to an indexed photo, from its
    stored embedding: nothing is decoded or encoded. The photo itself comes first (score 1)."""
    check_query(text="-", top=top, nprobe=nprobe, index=index)
    row = index.row_of(image_id)
    if row is None:
        raise DataError(f"no photo with id {image_id!r} in the index {index.path}",
                        hint="take the id from a search result (it changes when the photo's content does)",
                        exit_code=EXIT_DATA)
    t0 = time.perf_counter()
    q = torch.from_numpy(np.array(index.images[row:row + 1]))
    s, r, how = _photo_topk(index, q, top, nprobe)
    paths = index.row_paths[row]
    result: dict[str, Any] = {"query": {"kind": "photo", "image_id": image_id, "path": paths[0] if paths else None},
                              "index": str(index.path), "source": str(index.source), "top": top, "search": how,
                              "images": _image_hits(index, s[0], r[0])}
    if index.caption_emb is not None:
        cs, cr = exact_topk(index.caption_emb, q, top)
        _require_finite_scores(cs, index)
        result["captions"] = _caption_hits(index, cs[0], cr[0])
    result["timing_ms"] = {"encode": 0.0, "search": round((time.perf_counter() - t0) * 1000, 2)}
    stale = line_version_warning(index.meta)
    result["warnings"] = [stale] if stale else []
    result["n_images"] = index.n_images
    return result
