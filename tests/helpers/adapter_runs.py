"""A saved adapter folder whose trainable weights are moved off their initial values, so that an adapter really
changes the embeddings (search, export and serve tests compare against it)."""

from __future__ import annotations

from pathlib import Path

import torch

from mwa_cli.adapters.io import save_adapter
from mwa_cli.adapters.registry import apply_method
from mwa_cli.models.presets import build_backbone


def perturbed_adapter_run(path: Path, backbone: str = "beit3-tiny-test", method: str = "mwa", seed: int = 0) -> Path:
    """Save `method` on a random `backbone` (seed 0, as load_search_model rebuilds it without a config.json) with
    its trainables moved by N(0, 0.05²) noise drawn with `seed`."""
    torch.manual_seed(0)
    model, info = build_backbone(backbone)
    applied = apply_method(model, method)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for _, p in applied.trainable_named_parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    save_adapter(path, model, applied, info)
    return path
