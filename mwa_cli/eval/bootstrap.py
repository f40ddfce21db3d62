"""95 % bootstrap intervals for retrieval recalls, computed from per-query ranks.

The unit resampled is the *test image*: a resample draws N images with replacement and takes each drawn image's
image->text query and all of its captions' text->image queries (a caption belongs to exactly one image). Ranks are
kept as they were measured against the full gallery, so the interval says how much the recalls would move with
another set of test images of the same size from the same population (the gallery's own size is not resampled).

Any ranking protocol plugs in: pass the i2t rank of every image, the t2i rank of every caption and each caption's
image index (`QueryRanks`). Differences between two runs on the same test images use the *same* resamples for both
(a paired bootstrap), which is far narrower than comparing two separate intervals when the runs agree on most
queries. Percentile intervals; the seed and the number of resamples are recorded with every result.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mwa_cli.safe_open import InputFileError, load_json

DEFAULT_RESAMPLES = 2000
DEFAULT_SEED = 0
LEVEL = 0.95
KS = (1, 5, 10)
RANKS_FILE = "eval_ranks.json"


@dataclass(frozen=True)
class QueryRanks:
    """1-based ranks of every query of one evaluation (see mwa_cli.eval.metrics for the protocol)."""

    i2t: np.ndarray  # [N_img]
    t2i: np.ndarray  # [N_txt]
    text_to_image: np.ndarray  # [N_txt] index of each caption's image
    label_level: "QueryRanks | None" = None  # the same queries under the label-level protocol, when evaluated

    @property
    def n_images(self) -> int:
        return int(self.i2t.shape[0])

    def to_dict(self) -> dict[str, Any]:
        d = {"i2t_ranks": self.i2t.tolist(), "t2i_ranks": self.t2i.tolist(),
             "text_to_image": self.text_to_image.tolist()}
        if self.label_level is not None:
            d["label_level"] = self.label_level.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "QueryRanks":
        qr = cls(np.asarray(d["i2t_ranks"], dtype=np.int64), np.asarray(d["t2i_ranks"], dtype=np.int64),
                 np.asarray(d["text_to_image"], dtype=np.int64),
                 cls.from_dict(d["label_level"]) if d.get("label_level") else None)
        if qr.t2i.shape != qr.text_to_image.shape or (qr.text_to_image.size and
                                                      (qr.text_to_image.min() < 0 or qr.text_to_image.max() >= qr.n_images)):
            raise ValueError("ranks file: text_to_image must give one image index in [0, N_img) per caption")
        if min((r.min() for r in (qr.i2t, qr.t2i) if r.size), default=1) < 1:
            raise ValueError("ranks file: ranks are 1-based; a rank below 1 is no rank mwa writes")
        return qr


def metric_names(ks: Sequence[int] = KS) -> list[str]:
    return [f"i2t_r{k}" for k in ks] + [f"t2i_r{k}" for k in ks] + ["rsum"]


def _hits(ranks: QueryRanks, ks: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per image: i2t hits [N_img, K] and the number of its captions hitting at each K [N_img, K]; captions [N_img]."""
    ks_a = np.asarray(ks)
    i2t = (ranks.i2t[:, None] <= ks_a[None, :]).astype(np.float64)
    t2i_hit = (ranks.t2i[:, None] <= ks_a[None, :]).astype(np.float64)
    per_img = np.zeros((ranks.n_images, len(ks)))
    np.add.at(per_img, ranks.text_to_image, t2i_hit)
    n_caps = np.bincount(ranks.text_to_image, minlength=ranks.n_images).astype(np.float64)
    return i2t, per_img, n_caps


def _metrics_from_counts(weights: np.ndarray, i2t: np.ndarray, t2i: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """Metrics [R, 2K+1] for R resamples given as image multiplicities `weights` [R, N_img]."""
    n_img = weights.sum(axis=1, keepdims=True)
    r_i2t = 100.0 * (weights @ i2t) / n_img
    n_cap = weights @ caps
    r_t2i = 100.0 * (weights @ t2i) / np.maximum(n_cap, 1.0)[:, None]
    return np.concatenate([r_i2t, r_t2i, (r_i2t.sum(axis=1) + r_t2i.sum(axis=1))[:, None]], axis=1)


def point_metrics(ranks: QueryRanks, ks: Sequence[int] = KS) -> dict[str, float]:
    """R@K of both directions and RSUM on all test images (equals eval.json's figures)."""
    i2t, t2i, caps = _hits(ranks, ks)
    vals = _metrics_from_counts(np.ones((1, ranks.n_images)), i2t, t2i, caps)[0]
    return dict(zip(metric_names(ks), (float(v) for v in vals)))


def _weights(n_images: int, resamples: int, seed: int) -> np.ndarray:
    """Multiplicity of each image in each resample [R, N] (the same seed gives the same resamples)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_images, size=(resamples, n_images))
    w = np.zeros((resamples, n_images))
    np.add.at(w, (np.arange(resamples)[:, None], idx), 1.0)
    return w


def _interval(samples: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(samples, [100 * (1 - LEVEL) / 2, 100 * (1 + LEVEL) / 2])
    return float(lo), float(hi)


def bootstrap(ranks: QueryRanks, *, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
              ks: Sequence[int] = KS) -> dict[str, Any]:
    """{"value": {metric: v}, "ci95": {metric: [lo, hi]}, "resamples", "seed", "n_images", "level"}."""
    if ranks.n_images < 1:
        raise ValueError("bootstrap needs at least one test image")
    i2t, t2i, caps = _hits(ranks, ks)
    samples = _metrics_from_counts(_weights(ranks.n_images, resamples, seed), i2t, t2i, caps)
    names = metric_names(ks)
    return {"value": point_metrics(ranks, ks), "ci95": {m: list(_interval(samples[:, j])) for j, m in enumerate(names)},
            "resamples": int(resamples), "seed": int(seed), "n_images": ranks.n_images, "level": LEVEL}


def paired_difference(a: QueryRanks, b: QueryRanks, *, resamples: int = DEFAULT_RESAMPLES,
                      seed: int = DEFAULT_SEED, ks: Sequence[int] = KS) -> dict[str, Any]:
    """Difference a − b on the same test images, each resample drawn once and applied to both runs.

    Returns {"value", "ci95", "se"} per metric (se: the bootstrap standard error of the difference), plus
    "resamples", "seed", "n_images", "level"."""
    return paired_group_difference([a], [b], resamples=resamples, seed=seed, ks=ks)


def paired_group_difference(a: Sequence[QueryRanks], b: Sequence[QueryRanks], *,
                            resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
                            ks: Sequence[int] = KS) -> dict[str, Any]:
    """The difference of the mean over the runs `a` (several seeds of one method) and the mean over `b`, on the
    same test images: every resample of the images is applied to every run (the image part of the uncertainty;
    the spread between seeds is added by the report, `mwa_cli.report.evidence.seed_difference`)."""
    first = a[0]
    for r in (*a, *b):
        if r.n_images != first.n_images or not np.array_equal(r.text_to_image, first.text_to_image):
            raise ValueError("paired difference needs the same test images and captions in every run")
    w = _weights(first.n_images, resamples, seed)
    d = (np.mean([_metrics_from_counts(w, *_hits(r, ks)) for r in a], axis=0)
         - np.mean([_metrics_from_counts(w, *_hits(r, ks)) for r in b], axis=0))
    names = metric_names(ks)
    pa = {m: float(np.mean([point_metrics(r, ks)[m] for r in a])) for m in names}
    pb = {m: float(np.mean([point_metrics(r, ks)[m] for r in b])) for m in names}
    return {"value": {m: pa[m] - pb[m] for m in names},
            "ci95": {m: list(_interval(d[:, j])) for j, m in enumerate(names)},
            "se": {m: float(d[:, j].std(ddof=1)) if resamples > 1 else 0.0 for j, m in enumerate(names)},
            "resamples": int(resamples), "seed": int(seed), "n_images": first.n_images, "level": LEVEL}


def images_to_separate(diff: float, se: float, n_images: int) -> int | None:
    """Test images needed for an interval of ±1.96·se to exclude 0 for a difference of this size.

    The standard error shrinks as 1/√N, so N' = N·(1.96·se/|diff|)². None when the difference is 0 (no finite
    number of images separates it) or the interval already excludes 0 (returns N then)."""
    if not math.isfinite(diff) or not math.isfinite(se) or diff == 0:
        return None
    if se <= 0:
        return n_images
    return max(n_images, int(math.ceil(n_images * (1.96 * se / abs(diff)) ** 2)))


def save_ranks(folder: str | Path, split: str, ranks: QueryRanks) -> Path:
    """Write eval_ranks.json beside eval.json (atomic)."""
    from mwa_cli.fileio import atomic_write_text

    path = Path(folder) / RANKS_FILE  # compact: one number per query
    atomic_write_text(path, json.dumps(dict({"schema_version": 1, "split": split}, **ranks.to_dict()),
                                       separators=(",", ":")))
    return path


def load_ranks(folder: str | Path) -> tuple[str, QueryRanks] | None:
    """(split, ranks) from a run folder's eval_ranks.json, or None when it has none or it is unreadable."""
    path = Path(folder) / RANKS_FILE
    if not path.is_file():
        return None
    try:
        d = load_json(path)
        return str(d.get("split")), QueryRanks.from_dict(d)
    except (InputFileError, ValueError, KeyError, TypeError, AttributeError, OverflowError):
        return None
