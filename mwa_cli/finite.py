"""No NaN or infinity is ever published or evaluated as a result.

A NaN similarity compares false with everything, so a rank computed from it comes out 1 and recall 100 %: an
all-NaN adapter would "score" RSUM 600. Every place that turns weights or embeddings into a number someone reads
checks them here first: training before a checkpoint, a validation check and the published adapter
(mwa_cli/train/loop.py), `load_adapter` for every command that uses an adapter, the evaluation's embeddings, a
search's query and scores, an index's new embeddings. The error has exit code 7 (`EXIT_NONFINITE`).
"""

from __future__ import annotations

from typing import Any, Iterable

from mwa_cli.errors import EXIT_NONFINITE, MwaError


class NonFinite(MwaError):
    """Numbers that should be finite are not (NaN or infinity); exit 7."""

    exit_code = EXIT_NONFINITE


def all_finite(values: Any) -> bool:
    """Whether a tensor or array holds only finite numbers (integers always do)."""
    import torch

    t = values if isinstance(values, torch.Tensor) else torch.as_tensor(values)
    return not t.is_floating_point() or bool(torch.isfinite(t).all())


def nonfinite_names(named: Iterable[tuple[str, Any]]) -> list[str]:
    """The names of the tensors that hold a NaN or an infinity."""
    return [name for name, value in named if not all_finite(value)]


def require_finite(values: Any, what: str, hint: str) -> None:
    """Raise `NonFinite` ("`what` holds NaN or infinity") unless `values` is all finite."""
    if not all_finite(values):
        raise NonFinite(f"{what} holds NaN or infinity, so no result can be computed from it", hint=hint)
