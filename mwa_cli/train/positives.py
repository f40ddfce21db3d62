"""Which training pairs are positives of each other in the contrastive loss (`--positives`).

* `caption`: pairs whose caption text is identical (class-folder templates give every photo of a label the same
  few captions; treating those as negatives pushes each photo away from its own caption).
* `label`: pairs whose photos carry the same label (needs a label on every train pair).
* `off`: only a pair's own caption (the classic one-positive-per-row loss).
* `auto` (default): `caption` when some caption text repeats in the train split, else `off`, so data whose
  captions are unique trains exactly as before.

Captions that are *mostly* repeats (`PositiveGroups.templated`: at most half of the train pairs carry a distinct
text, as class-folder templates do) also get their own default learning rate (`presets.recommended_lr`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mwa_cli.errors import ConfigError
from mwa_cli.train.config import POSITIVE_MODES


@dataclass
class PositiveGroups:
    """The resolved mode and one group id per train pair (None: every pair is its own group)."""

    mode: str
    groups: np.ndarray | None  # [P] int64
    requested: str
    distinct_captions: int
    pairs: int

    @property
    def templated(self) -> bool:
        """True when at most half of the train pairs carry a distinct caption (class-folder templates, a label
        used as the caption); sample_data's own captions, 79 % distinct, are not."""
        return self.pairs > 0 and 2 * self.distinct_captions <= self.pairs

    def record(self) -> dict:
        """The `positives_detail` entry of config.json."""
        n_groups = int(len(np.unique(self.groups))) if self.groups is not None else self.pairs
        return {"requested": self.requested, "mode": self.mode, "pairs": self.pairs,
                "distinct_captions": self.distinct_captions, "groups": n_groups,
                "templated": self.templated}


def group_ids(values: list[str]) -> np.ndarray:
    """Dense int64 ids, equal exactly where the values are equal (first-appearance order)."""
    seen: dict[str, int] = {}
    return np.array([seen.setdefault(v, len(seen)) for v in values], dtype=np.int64)


def resolve_positives(mode: str, captions: list[str], labels: list[str] | None) -> PositiveGroups:
    """Resolve `--positives` on the train split's captions (and labels, one per pair, "" when missing)."""
    if mode not in POSITIVE_MODES:
        raise ConfigError(f"unknown --positives mode {mode!r}", hint=f"choose {', '.join(POSITIVE_MODES)}")
    distinct = len(set(captions))
    resolved = mode
    if mode == "auto":
        resolved = "caption" if distinct < len(captions) else "off"
    groups: np.ndarray | None = None
    if resolved == "caption":
        groups = group_ids(captions)
    elif resolved == "label":
        missing = sum(1 for x in (labels or [""] * len(captions)) if not x)
        if missing:
            raise ConfigError(f"--positives label needs a label on every train pair; {missing} of {len(captions)} "
                              "have none",
                              hint="use class folders or a label column in captions.csv, or --positives caption")
        groups = group_ids(list(labels or []))
    return PositiveGroups(mode=resolved, groups=groups, requested=mode, distinct_captions=distinct,
                          pairs=len(captions))
