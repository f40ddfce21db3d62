"""Image-text scores of single-vector and multi-vector embeddings, the one place both shapes are handled.

Most backbones embed an item as one unit vector ``[N, d]``: the score is the dot product. BLIP-2's Q-Former
embeds an image as one unit vector per query token ``[N, Q, d]``, and its image-text score is the best of them
(``max_q <img_q, txt>``, as transformers' ``Blip2ForImageTextRetrieval`` computes it). Either side may be
multi-vector; the score is the maximum over every query-token axis present.
"""

from __future__ import annotations

from torch import Tensor


def _flat(x: Tensor) -> tuple[Tensor, int]:
    if x.ndim == 2:
        return x, 1
    if x.ndim == 3:
        return x.reshape(-1, x.shape[-1]), x.shape[1]
    raise ValueError(f"embeddings must be [N, d] or [N, Q, d], got shape {tuple(x.shape)}")


def similarity(a: Tensor, b: Tensor) -> Tensor:
    """Scores ``[Na, Nb]`` of ``a`` ([Na, d] or [Na, Qa, d]) against ``b`` ([Nb, d] or [Nb, Qb, d])."""
    if a.ndim == 2 and b.ndim == 2:
        return a @ b.t()
    fa, qa = _flat(a)
    fb, qb = _flat(b)
    scores = (fa @ fb.t()).reshape(a.shape[0], qa, b.shape[0], qb)
    return scores.amax(dim=(1, 3))


def paired_similarity(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise scores ``[N]``: row i of ``a`` against row i of ``b`` (same shapes rules as ``similarity``)."""
    if a.ndim == 2 and b.ndim == 2:
        return (a * b).sum(dim=-1)
    fa = a if a.ndim == 3 else a[:, None]
    fb = b if b.ndim == 3 else b[:, None]
    return (fa @ fb.transpose(1, 2)).amax(dim=(1, 2))


__all__ = ["paired_similarity", "similarity"]
