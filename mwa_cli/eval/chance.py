"""Chance level: the recall a ranking that orders the candidates at random would get on the same queries.

A query with `m` matching items among `n` candidates hits at K with probability 1 − C(n−m, K) / C(n, K) (drawing
K of the n without replacement). Instance level: an image query matches its own captions, a caption query its one
image (about K / candidates). Label level: the items carrying the query's caption text or label, so chance follows
the label frequencies. R@K chance is the mean over the queries, RSUM chance the sum of the six.

The interval is the 95 % range a random model (random scores) would fall in on these queries, by the normal
approximation: a run inside it cannot be told from guessing. Each query's hits at K = 1, 5, 10 are counted
together (they are nested); queries of one direction are independent; the two directions share the scores, so
their spreads add as if fully correlated (a slightly wide range rather than a narrow one).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

KS = (1, 5, 10)
Z95 = 1.959963984540054


def hit_probability(matches: np.ndarray, candidates: int, k: int) -> np.ndarray:
    """P(at least one of `matches` items is among K drawn at random from `candidates`), per query."""
    m = np.asarray(matches, dtype=np.float64)
    if k >= candidates:
        return np.where(m > 0, 1.0, 0.0)
    miss = np.ones_like(m)
    for t in range(k):  # C(n−m, K) / C(n, K) = Π (n−m−t) / (n−t)
        miss *= np.clip(candidates - m - t, 0.0, None) / (candidates - t)
    return 1.0 - miss


def _direction(matches: np.ndarray, candidates: int, ks: Sequence[int]) -> tuple[dict[str, float], float]:
    """({"r1", "r5", "r10"} in percent, variance of the direction's summed recalls) for one query direction."""
    p = np.stack([hit_probability(matches, candidates, k) for k in ks])  # [K, Q]
    n = p.shape[1]
    mean_y = p.sum(axis=0)
    # E[Y²] for Y = Σ_k 1[rank ≤ k]: Σ_{k, j} P(rank ≤ min(k, j)), the hits being nested (ks ascending)
    second = sum(p[min(a, b)] for a in range(len(ks)) for b in range(len(ks)))
    var = float(np.sum(second - mean_y ** 2)) * (100.0 / n) ** 2
    return {f"r{k}": float(100.0 * p[i].mean()) for i, k in enumerate(ks)}, var


def chance_recalls(i2t_matches: np.ndarray, n_captions: int, t2i_matches: np.ndarray, n_images: int,
                   ks: Sequence[int] = KS) -> dict[str, Any]:
    """{"i2t": {r1, r5, r10}, "t2i": {...}, "rsum", "rsum_ci95": [lo, hi]} of a random ranking on these queries.

    `i2t_matches`: for each image query, how many of the `n_captions` captions match it; `t2i_matches`: for each
    caption query, how many of the `n_images` images match it."""
    ks = tuple(sorted(int(k) for k in ks))
    i2t, var_i = _direction(np.asarray(i2t_matches), int(n_captions), ks)
    t2i, var_t = _direction(np.asarray(t2i_matches), int(n_images), ks)
    rsum = sum(i2t.values()) + sum(t2i.values())
    # within a direction the queries are independent (disjoint rows, or columns, of a random score matrix); across
    # directions they share scores, so their spreads are added as if fully correlated (an upper bound)
    half = Z95 * float(np.sqrt(var_i) + np.sqrt(var_t))
    return {"i2t": i2t, "t2i": t2i, "rsum": rsum, "rsum_ci95": [max(0.0, rsum - half), rsum + half]}


def instance_chance(text_to_image: Sequence[int], ks: Sequence[int] = KS) -> dict[str, Any]:
    """Chance of the instance protocol: an image matches its own captions, a caption its own image."""
    t2i = np.asarray(text_to_image, dtype=np.int64).reshape(-1)
    n_images = int(t2i.max()) + 1 if t2i.size else 0
    per_image = np.bincount(t2i, minlength=n_images)
    return chance_recalls(per_image, int(t2i.size), np.ones(t2i.size), n_images, ks)
