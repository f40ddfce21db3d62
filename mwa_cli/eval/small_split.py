"""Evaluation splits too small to decide anything: the documented minimum, recalls that are 100 % by construction,
and the warning `mwa prepare` prints. Why 30: docs/decisions.md, "Small test splits"."""

from __future__ import annotations

import math
from typing import Any

MIN_EVAL_IMAGES = 30  # below this, val/test recall cannot tell methods apart (docs/decisions.md)
KS = (1, 5, 10)


def trivial_ks(n_candidates: Any) -> list[int]:
    """The K of R@K that are 100 % whatever the model: K ≥ the number of candidates the query ranks."""
    if not isinstance(n_candidates, int) or isinstance(n_candidates, bool) or n_candidates <= 0:
        return []
    return [k for k in KS if k >= n_candidates]


def trivial_recalls(ev: dict[str, Any]) -> dict[str, list[int]]:
    """{"i2t": [...], "t2i": [...]}: the recalls of an eval.json dict that are 100 % by construction (an image
    query ranks the split's captions, a caption query its images)."""
    return {"i2t": trivial_ks(ev.get("n_captions")), "t2i": trivial_ks(ev.get("n_images"))}


MARK = "†"  # footnote mark of a recall that is 100 % by construction


def fmt_recalls(block: dict[str, Any], trivial: list[int], digits: int = 2) -> str:
    """'25.00 / 100.00† / 100.00†': R@1/5/10 of one direction, the ones true by construction marked."""
    return " / ".join(f"{block[f'r{k}']:.{digits}f}" + (MARK if k in trivial else "") for k in KS)


def trivial_sentence(ev: dict[str, Any], split: str = "test") -> str:
    """'R@5 and R@10 (text→image) are 100 % by construction: only 4 test images.' or '' when none is."""
    parts = []
    for direction, arrow, n, what in (("t2i", "text→image", ev.get("n_images"), "images"),
                                      ("i2t", "image→text", ev.get("n_captions"), "captions")):
        ks = trivial_recalls(ev)[direction]
        if ks:
            names = " and ".join(f"R@{k}" for k in ks)
            verb = "are" if len(ks) > 1 else "is"
            parts.append(f"{names} ({arrow}) {verb} 100 % by construction: only {n} {split} {what}")
    return (MARK + " " + "; ".join(parts) + ".") if parts else ""


def images_needed(share: float) -> int:
    """Photos to collect in total for a split of `share` (0–1) to hold MIN_EVAL_IMAGES images."""
    return math.ceil(round(MIN_EVAL_IMAGES / share, 6)) if share > 0 else MIN_EVAL_IMAGES


def split_warnings(by_split: dict[str, dict[str, int]], ratios: tuple[float, float, float] | None = None
                   ) -> list[str]:
    """`mwa prepare`'s warnings for val/test splits below MIN_EVAL_IMAGES images (one line each)."""
    out = []
    for i, split in ((1, "val"), (2, "test")):
        n = int((by_split.get(split) or {}).get("images", 0))
        if n >= MIN_EVAL_IMAGES:
            continue
        why = ("its recall cannot tell methods apart (the report gives no better/worse verdict below "
               f"{MIN_EVAL_IMAGES})" if split == "test" else
               "validation checks (early stopping, time to quality) follow noise")
        more = ""
        if ratios is not None and ratios[i] > 0:
            more = (f"; at --split {','.join(f'{r:g}' for r in ratios)} that takes about "
                    f"{images_needed(ratios[i])} photos in all, or give {split} a larger share")
        out.append(f"warning: the {split} split has only {n} image(s), fewer than {MIN_EVAL_IMAGES}: {why}; "
                   f"text→image R@K is 100 % by construction when K ≥ the split's images{more}")
    return out
