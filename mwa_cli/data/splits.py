"""Deterministic train/val/test splits at the image level (so duplicates of one image never straddle splits).

Images are sorted by content id before splitting, so the result depends only on the photos, the labels, the
ratios and the seed: not on file names or on the order the folder was walked. Stratified by label with
scikit-learn when every label has enough images; otherwise a per-label proportional allocation (still
stratified, still deterministic). A split given in the captions table wins.
"""

from __future__ import annotations

import numpy as np

from mwa_cli.errors import ConfigError

SPLIT_NAMES = ("train", "val", "test")


def parse_ratios(text: str) -> tuple[float, float, float]:
    """'0.8,0.1,0.1' (or '80,10,10') -> (0.8, 0.1, 0.1)."""
    try:
        parts = [float(p) for p in str(text).replace(" ", "").split(",") if p != ""]
    except ValueError:
        raise ConfigError(f"--split {text!r} is not three numbers", hint="e.g. --split 0.8,0.1,0.1") from None
    if len(parts) == 2:
        parts.append(0.0)
    if len(parts) != 3 or any(p < 0 or p != p for p in parts):
        raise ConfigError(f"--split {text!r} must be three non-negative numbers train,val,test",
                          hint="e.g. --split 0.8,0.1,0.1")
    total = sum(parts)
    if abs(total - 100) < 1e-6:
        parts = [p / 100 for p in parts]
    elif abs(total - 1) > 1e-6:
        raise ConfigError(f"--split {text!r} adds up to {total:g}, not 1", hint="e.g. --split 0.8,0.1,0.1")
    if parts[0] <= 0:
        raise ConfigError("--split needs a non-zero train share", hint="e.g. --split 0.8,0.1,0.1")
    return parts[0], parts[1], parts[2]


def _sizes(n: int, ratios: tuple[float, float, float]) -> tuple[int, int, int]:
    _, rv, rt = ratios
    n_test = int(round(n * rt))
    n_val = int(round(n * rv))
    if n >= 3:
        n_test = max(n_test, 1 if rt > 0 else 0)
        n_val = max(n_val, 1 if rv > 0 else 0)
    while n - n_test - n_val < 1 and (n_test or n_val):
        if n_val >= n_test and n_val:
            n_val -= 1
        else:
            n_test -= 1
    return n - n_val - n_test, n_val, n_test


def _interleaved(ids: list[str], y: list[str], sizes: tuple[int, int, int], seed: int) -> dict[str, str]:
    """Fallback for labels too small for scikit-learn: shuffle within each label, deal the labels out in turn
    (largest first), then cut train, val and test off that sequence: every split gets the planned size and the
    labels are spread as evenly as the counts allow."""
    rng = np.random.default_rng(seed)
    groups: dict[str, list[str]] = {}
    for i, lab in zip(ids, y):
        groups.setdefault(lab, []).append(i)
    queues = [[g[k] for k in rng.permutation(len(g))] for _, g in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))]
    seq: list[str] = []
    while any(queues):
        for q in queues:
            if q:
                seq.append(q.pop(0))
    n_train, n_val, n_test = sizes
    out = {i: "train" for i in seq[:n_train]}  # train first: a label with one photo is trained on
    out.update({i: "val" for i in seq[n_train:n_train + n_val]})
    out.update({i: "test" for i in seq[n_train + n_val:]})
    return out


def assign_splits(
    image_ids: list[str],
    labels: dict[str, str],
    given: dict[str, str],
    ratios: tuple[float, float, float],
    seed: int,
) -> tuple[dict[str, str], str]:
    """{image_id: split} and a short description of the method used."""
    from sklearn.model_selection import train_test_split

    out = {i: given[i] for i in image_ids if given.get(i)}
    free = sorted(i for i in image_ids if i not in out)
    if not free:
        return out, "from the table's split column"
    y = [labels.get(i, "") for i in free]
    n_train, n_val, n_test = _sizes(len(free), ratios)
    stratify = len(set(y)) > 1
    method = "stratified by label (scikit-learn)" if stratify else "random (scikit-learn)"
    try:
        rest, test = (free, []) if n_test == 0 else train_test_split(
            free, test_size=n_test, random_state=seed, shuffle=True, stratify=y if stratify else None)
        y_rest = [labels.get(i, "") for i in rest]
        train, val = (rest, []) if n_val == 0 else train_test_split(
            rest, test_size=n_val, random_state=seed, shuffle=True,
            stratify=y_rest if stratify else None)
        for name, group in (("train", train), ("val", val), ("test", test)):
            for i in group:
                out[i] = name
    except ValueError:
        # Some label is too small for scikit-learn's stratified splitter: allocate within each label.
        out.update(_interleaved(free, y, (n_train, n_val, n_test), seed))
        method = "spread over labels (some labels are too small for a stratified split)"
    if any(given.values()):
        method += "; the table's split column wins where given"
    return out, method
