"""Image-text retrieval metrics (R@K, median rank, RSUM) computed in bounded memory.

Protocol (the words in :data:`PROTOCOL` are written into ``eval.json``):

* Every image is a query against all captions of the evaluated split (image->text, ``i2t``). It hits at K
  when ANY of its own captions is among the K best-scoring captions.
* Every caption is a query against all images (text->image, ``t2i``). It hits at K when its own image is
  among the K best-scoring images.
* The rank of a query is ``1 + the number of NON-positive gallery items whose score is strictly higher than the
  best positive's score``. Ties are therefore counted in the query's favour (a negative with exactly the same
  score as the positive does not push it down). Other positives (the other captions of the same image) never
  count against an image query. ``R@K`` = percentage of queries with rank <= K; ``median_rank`` = the median
  of the 1-based ranks (numpy's median: the mean of the two middle values for an even count).
* RSUM = the sum of the six recalls (R@1/5/10 in both directions); mean recall = RSUM / 6.

Scores are plain dot products of the embeddings as given: pass L2-normalised embeddings for cosine similarity.
Image embeddings may be multi-vector ([N_img, Q, d], BLIP-2): an image's score is then its best query token's
(``mwa_cli.similarity``).
Similarities are computed block by block (``chunk_size`` images x ``chunk_size`` captions at a time), so memory
stays bounded by ``chunk_size**2`` scores plus a few numbers per query, never ``N_img x N_txt``: 100k images x
500k captions works. Each block serves both directions (the text->image block is the transpose of the
image->text one). Positive scores are computed once as row-wise dot products, and positives are excluded from
the counts by index, so floating-point differences between the row-wise dot product and the block matmul can
never rank an item behind itself.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from mwa_cli.similarity import paired_similarity, similarity

PROTOCOL = (
    "Image-text retrieval over the whole evaluated split. Image->text: every image is a query against all "
    "captions; it hits at K if ANY of its captions is in the top K. Text->image: every caption is a query "
    "against all images; it hits at K if its image is in the top K. Rank = 1 + number of non-matching items "
    "scoring strictly higher than the best matching one (ties count in the query's favour). R@K in percent; "
    "median rank is 1-based; RSUM = sum of the six recalls (R@1/5/10, both directions); mean recall = RSUM/6. "
    "Scores are dot products of L2-normalised embeddings (cosine similarity)."
)


def _check_inputs(image_emb: Tensor, text_emb: Tensor, text_to_image: Tensor) -> Tensor:
    if image_emb.ndim not in (2, 3) or text_emb.ndim != 2:
        raise ValueError("image_emb must be [N, d] or [N, Q, d] and text_emb [N, d]")
    if image_emb.shape[-1] != text_emb.shape[-1]:
        raise ValueError(
            f"embedding widths differ: images {image_emb.shape[-1]}, texts {text_emb.shape[-1]}"
        )
    t2i = torch.as_tensor(text_to_image, dtype=torch.long, device=text_emb.device).reshape(-1)
    if t2i.numel() != text_emb.shape[0]:
        raise ValueError(
            f"text_to_image has {t2i.numel()} entries but there are {text_emb.shape[0]} captions"
        )
    n_img = image_emb.shape[0]
    if n_img == 0 or t2i.numel() == 0:
        raise ValueError("retrieval metrics need at least one image and one caption")
    if int(t2i.min()) < 0 or int(t2i.max()) >= n_img:
        raise ValueError("text_to_image holds an image index outside [0, N_img)")
    counts = torch.bincount(t2i, minlength=n_img)
    if bool((counts == 0).any()):
        missing = int((counts == 0).sum())
        raise ValueError(f"{missing} image(s) have no caption: every image needs at least one")
    return t2i


def _merge_topk(
    best_v: Tensor | None, best_i: Tensor | None, vals: Tensor, idx: Tensor, k: int
) -> tuple[Tensor, Tensor]:
    """Merge running top-k (values, indices) rows with a new block's candidates (same rows)."""
    if best_v is not None:
        vals = torch.cat([best_v, vals], dim=1)
        idx = torch.cat([best_i, idx], dim=1)
    kk = min(k, vals.shape[1])
    v, pos = torch.topk(vals, kk, dim=1)
    return v, torch.gather(idx, 1, pos)


@torch.inference_mode()
def retrieval_ranks(
    image_emb: Tensor,
    text_emb: Tensor,
    text_to_image: Tensor,
    *,
    chunk_size: int = 4096,
    topk: int = 0,
) -> dict[str, Tensor]:
    """1-based ranks of every query in both directions (see the module docstring for the protocol).

    Returns ``{"i2t_ranks": LongTensor[N_img], "t2i_ranks": LongTensor[N_txt]}`` on the CPU; when ``topk`` > 0
    also ``"i2t_topk"`` (LongTensor[N_img, k], caption indices, best first) and ``"t2i_topk"``
    (LongTensor[N_txt, k], image indices, best first).
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    t2i = _check_inputs(image_emb, text_emb, text_to_image)
    img = image_emb.detach().float()
    txt = text_emb.detach().float()
    dev = img.device
    txt = txt.to(dev)
    t2i = t2i.to(dev)
    n_img, n_txt = img.shape[0], txt.shape[0]

    # Positive scores: each caption with its own image; each image's best caption.
    pos_txt = paired_similarity(img[t2i], txt)  # [N_txt]
    pos_img = torch.full((n_img,), float("-inf"), device=dev)
    pos_img = pos_img.scatter_reduce(0, t2i, pos_txt, reduce="amax", include_self=True)

    i2t_count = torch.zeros(n_img, dtype=torch.long, device=dev)
    t2i_count = torch.zeros(n_txt, dtype=torch.long, device=dev)
    t2i_best_v: Tensor | None = None
    t2i_best_i: Tensor | None = None
    if topk > 0:
        # running best images per caption; the -inf placeholders are pushed out by real scores (there are
        # always >= min(topk, N_img) real candidates by the end)
        kt = min(topk, n_img)
        t2i_best_v = torch.full((n_txt, kt), float("-inf"), device=dev)
        t2i_best_i = torch.zeros((n_txt, kt), dtype=torch.long, device=dev)
    i2t_topk_parts: list[Tensor] = []

    img_chunk = max(1, chunk_size // img.shape[1]) if img.ndim == 3 else chunk_size  # Q scores per image pair
    for i0 in range(0, n_img, img_chunk):
        i1 = min(i0 + img_chunk, n_img)
        img_ids = torch.arange(i0, i1, device=dev)
        row_best_v: Tensor | None = None
        row_best_i: Tensor | None = None
        for j0 in range(0, n_txt, chunk_size):
            j1 = min(j0 + chunk_size, n_txt)
            block = similarity(img[i0:i1], txt[j0:j1])  # [ci, cj]
            is_pos = t2i[j0:j1].unsqueeze(0) == img_ids.unsqueeze(1)
            i2t_count[i0:i1] += ((block > pos_img[i0:i1, None]) & ~is_pos).sum(dim=1)
            t2i_count[j0:j1] += ((block > pos_txt[None, j0:j1]) & ~is_pos).sum(dim=0)
            if topk > 0:
                kk = min(topk, j1 - j0)
                v, p = torch.topk(block, kk, dim=1)
                row_best_v, row_best_i = _merge_topk(row_best_v, row_best_i, v, p + j0, topk)
                kk = min(topk, i1 - i0)
                v, p = torch.topk(block.T, kk, dim=1)  # [cj, kk]
                assert t2i_best_v is not None and t2i_best_i is not None
                new_v, new_i = _merge_topk(t2i_best_v[j0:j1], t2i_best_i[j0:j1], v, p + i0, kt)
                t2i_best_v[j0:j1] = new_v
                t2i_best_i[j0:j1] = new_i
        if topk > 0:
            assert row_best_i is not None
            i2t_topk_parts.append(row_best_i)

    out = {"i2t_ranks": (i2t_count + 1).cpu(), "t2i_ranks": (t2i_count + 1).cpu()}
    if topk > 0:
        out["i2t_topk"] = torch.cat(i2t_topk_parts, dim=0).cpu()
        assert t2i_best_i is not None
        out["t2i_topk"] = t2i_best_i.cpu()
    return out


@torch.inference_mode()
def group_retrieval_ranks(
    image_emb: Tensor,
    text_emb: Tensor,
    image_groups: Tensor,
    text_groups: Tensor,
    *,
    chunk_size: int = 4096,
    top1: bool = False,
) -> dict[str, Tensor]:
    """1-based ranks of every query when positives are defined by group ids instead of by instance.

    ``text_groups`` [N_txt]: each caption's group id (>= 0). ``image_groups`` [N_img, K]: each image's group ids,
    padded with -1 (an image may belong to several groups, e.g. the texts of its several captions). Image i and
    caption j match when ``text_groups[j]`` is one of ``image_groups[i]``; every query needs at least one match.
    Rank = 1 + the number of non-matching items scoring strictly higher than the best matching one (ties in the
    query's favour), as :func:`retrieval_ranks`, whose instance protocol is the special case
    ``image_groups = arange(N_img)[:, None]``, ``text_groups = text_to_image``. Two passes over the same blocks
    (best match, then counts), memory bounded by ``chunk_size**2``. Returns ``{"i2t_ranks", "t2i_ranks"}``; with
    ``top1`` also ``"i2t_top1"`` / ``"t2i_top1"``, the index of each query's best-scoring item (which one answers
    it: a collapsed model answers most queries with the items of one label).
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    img = image_emb.detach().float()
    dev = img.device
    txt = text_emb.detach().float().to(dev)
    ig = torch.as_tensor(image_groups, dtype=torch.long).to(dev)
    tg = torch.as_tensor(text_groups, dtype=torch.long).reshape(-1).to(dev)
    if ig.ndim == 1:
        ig = ig[:, None]
    if img.ndim not in (2, 3) or txt.ndim != 2 or img.shape[-1] != txt.shape[-1]:
        raise ValueError("image_emb must be [N, d] or [N, Q, d] and text_emb [N, d], of the same width")
    if ig.shape[0] != img.shape[0] or tg.numel() != txt.shape[0]:
        raise ValueError("image_groups needs one row per image and text_groups one entry per caption")
    n_img, n_txt = img.shape[0], txt.shape[0]
    img_chunk = max(1, chunk_size // img.shape[1]) if img.ndim == 3 else chunk_size  # Q scores per image pair

    def blocks():
        for i0 in range(0, n_img, img_chunk):
            i1 = min(i0 + img_chunk, n_img)
            for j0 in range(0, n_txt, chunk_size):
                j1 = min(j0 + chunk_size, n_txt)
                is_pos = (ig[i0:i1, :, None] == tg[None, None, j0:j1]).any(dim=1)
                yield i0, i1, j0, j1, similarity(img[i0:i1], txt[j0:j1]), is_pos

    ninf = torch.tensor(float("-inf"), device=dev)
    best_img = torch.full((n_img,), float("-inf"), device=dev)
    best_txt = torch.full((n_txt,), float("-inf"), device=dev)
    answers = _TopOne(n_img, n_txt, dev) if top1 else None
    for i0, i1, j0, j1, block, is_pos in blocks():
        masked = torch.where(is_pos, block, ninf)
        best_img[i0:i1] = torch.maximum(best_img[i0:i1], masked.max(dim=1).values)
        best_txt[j0:j1] = torch.maximum(best_txt[j0:j1], masked.max(dim=0).values)
        if answers is not None:
            answers.update(i0, i1, j0, j1, block)
    if bool(torch.isinf(best_img).any()) or bool(torch.isinf(best_txt).any()):
        raise ValueError("every image and every caption needs at least one matching item of the other kind")
    i2t_count = torch.zeros(n_img, dtype=torch.long, device=dev)
    t2i_count = torch.zeros(n_txt, dtype=torch.long, device=dev)
    for i0, i1, j0, j1, block, is_pos in blocks():
        i2t_count[i0:i1] += ((block > best_img[i0:i1, None]) & ~is_pos).sum(dim=1)
        t2i_count[j0:j1] += ((block > best_txt[None, j0:j1]) & ~is_pos).sum(dim=0)
    out = {"i2t_ranks": (i2t_count + 1).cpu(), "t2i_ranks": (t2i_count + 1).cpu()}
    if answers is not None:
        out.update(i2t_top1=answers.i2t_idx.cpu(), t2i_top1=answers.t2i_idx.cpu())
    return out


class _TopOne:
    """The best-scoring item of every query in both directions, over the blocks of a similarity pass."""

    def __init__(self, n_img: int, n_txt: int, dev: torch.device):
        self.i2t_v = torch.full((n_img,), float("-inf"), device=dev)
        self.i2t_idx = torch.zeros(n_img, dtype=torch.long, device=dev)
        self.t2i_v = torch.full((n_txt,), float("-inf"), device=dev)
        self.t2i_idx = torch.zeros(n_txt, dtype=torch.long, device=dev)

    def update(self, i0: int, i1: int, j0: int, j1: int, block: Tensor) -> None:
        v, p = block.max(dim=1)
        better = v > self.i2t_v[i0:i1]
        self.i2t_v[i0:i1] = torch.where(better, v, self.i2t_v[i0:i1])
        self.i2t_idx[i0:i1] = torch.where(better, p + j0, self.i2t_idx[i0:i1])
        v, p = block.max(dim=0)
        better = v > self.t2i_v[j0:j1]
        self.t2i_v[j0:j1] = torch.where(better, v, self.t2i_v[j0:j1])
        self.t2i_idx[j0:j1] = torch.where(better, p + i0, self.t2i_idx[j0:j1])


def _direction(ranks: Tensor, ks: Sequence[int]) -> dict[str, float]:
    r = ranks.numpy()
    d: dict[str, float] = {f"r{k}": float(100.0 * np.mean(r <= k)) for k in ks}
    d["median_rank"] = float(np.median(r))
    return d


def _summary(i2t_ranks: Tensor, t2i_ranks: Tensor, ks: Sequence[int]) -> dict[str, Any]:
    i2t = _direction(i2t_ranks, ks)
    t2i = _direction(t2i_ranks, ks)
    rsum = float(sum(i2t[f"r{k}"] + t2i[f"r{k}"] for k in ks))
    return {"i2t": i2t, "t2i": t2i, "rsum": rsum}


def retrieval_metrics(
    image_emb: Tensor,
    text_emb: Tensor,
    text_to_image: Tensor,
    *,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 4096,
    labels: Sequence[str] | None = None,
    ranks_out: dict[str, Tensor] | None = None,
) -> dict[str, Any]:
    """Retrieval metrics in the ``eval.json`` shape of docs/formats.md.

    ``image_emb`` [N_img, d], ``text_emb`` [N_txt, d] (L2-normalised), ``text_to_image`` [N_txt] the index of
    each caption's image. ``labels``: one label per image; when given, ``per_label`` holds, for each non-empty
    label, the metrics of that label's queries (its images for i2t, its images' captions for t2i) ranked
    against the FULL gallery. Images with an empty label ("" or None) are left out of ``per_label`` only.

    Returns ``{"protocol", "n_images", "n_captions", "i2t": {"r1","r5","r10","median_rank"}, "t2i": {...},
    "rsum", "mean_recall"[, "per_label"]}``; the caller adds split, method, backbone, dataset_hash, seconds,
    created. RSUM sums the 2*len(ks) recalls (six with the default ks); mean_recall = RSUM / (2*len(ks)).
    ``ranks_out``: a dict that receives the per-query ranks (``i2t_ranks``, ``t2i_ranks``) for the bootstrap.
    """
    ks = tuple(int(k) for k in ks)
    ranks = retrieval_ranks(image_emb, text_emb, text_to_image, chunk_size=chunk_size)
    i2t_ranks, t2i_ranks = ranks["i2t_ranks"], ranks["t2i_ranks"]
    if ranks_out is not None:
        ranks_out.update(i2t_ranks=i2t_ranks, t2i_ranks=t2i_ranks)
    t2i = torch.as_tensor(text_to_image, dtype=torch.long).reshape(-1).cpu()
    s = _summary(i2t_ranks, t2i_ranks, ks)
    out: dict[str, Any] = {
        "protocol": PROTOCOL,
        "n_images": int(image_emb.shape[0]),
        "n_captions": int(text_emb.shape[0]),
        "i2t": s["i2t"],
        "t2i": s["t2i"],
        "rsum": s["rsum"],
        "mean_recall": s["rsum"] / (2 * len(ks)),
    }
    if labels is not None:
        if len(labels) != image_emb.shape[0]:
            raise ValueError(f"labels has {len(labels)} entries but there are {image_emb.shape[0]} images")
        lab = np.array(["" if x is None else str(x) for x in labels], dtype=object)
        per: dict[str, Any] = {}
        cap_lab = lab[t2i.numpy()]
        for name in sorted({x for x in lab if x}):
            im = torch.from_numpy(lab == name)
            cm = torch.from_numpy(cap_lab == name)
            ls = _summary(i2t_ranks[im], t2i_ranks[cm], ks)
            per[name] = {
                "n_images": int(im.sum()),
                "n_captions": int(cm.sum()),
                "i2t": ls["i2t"],
                "t2i": ls["t2i"],
                "rsum": ls["rsum"],
            }
        out["per_label"] = per
    return out


def _spread(n: int, limit: int | None) -> list[int]:
    """``limit`` indices spread evenly over range(n) (all of them when limit is None or >= n)."""
    if limit is None or limit >= n:
        return list(range(n))
    if limit <= 0:
        return []
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, limit)})


def topk_lists(
    image_emb: Tensor,
    text_emb: Tensor,
    text_to_image: Tensor,
    *,
    image_ids: Sequence[str],
    split: str = "test",
    k: int = 10,
    caption_indices: Sequence[int] | None = None,
    max_queries: int | None = None,
    chunk_size: int = 4096,
) -> dict[str, Any]:
    """The content of ``eval_topk.json`` (docs/formats.md) for the report's gallery.

    ``image_ids[i]`` is the manifest ``image_id`` of row i of ``image_emb``. ``caption_indices[j]`` is the
    caption's index among the split's rows of manifest.csv in file order (default: j, i.e. ``text_emb`` rows
    are already in that order). ``max_queries`` keeps that many queries per direction, spread evenly over the
    split (None: every query; the report only shows a few, so the trainer may pass e.g. 50 on large splits).
    Lists are best first; ties are broken arbitrarily by ``torch.topk``.
    """
    if len(image_ids) != image_emb.shape[0]:
        raise ValueError("image_ids must have one entry per image embedding")
    cap_idx = list(range(text_emb.shape[0])) if caption_indices is None else [int(c) for c in caption_indices]
    if len(cap_idx) != text_emb.shape[0]:
        raise ValueError("caption_indices must have one entry per text embedding")
    r = retrieval_ranks(image_emb, text_emb, text_to_image, chunk_size=chunk_size, topk=k)
    i2t_top, t2i_top = r["i2t_topk"].tolist(), r["t2i_topk"].tolist()
    return {
        "split": split,
        "i2t": [
            {"image_id": str(image_ids[i]), "topk": [cap_idx[j] for j in i2t_top[i]]}
            for i in _spread(len(image_ids), max_queries)
        ],
        "t2i": [
            {"caption_index": cap_idx[j], "topk": [str(image_ids[i]) for i in t2i_top[j]]}
            for j in _spread(len(cap_idx), max_queries)
        ],
    }
