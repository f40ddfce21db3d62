"""Helpers shared by the Hugging Face backbone tests: build a saved tiny model folder with a method applied, and
a small seeded batch of pixels and captions for it."""

from __future__ import annotations

from pathlib import Path

import torch

from mwa_cli.adapters.registry import apply_method
from mwa_cli.models.presets import build_backbone
from mwa_cli.models.run_tokenizer import load_tokenizer

CAPTIONS = ["a red scratch on a steel plate number 3", "blue dent mark 7 on the left", "a white crack number 12",
            "yellow stain on the right 20"]


def build_hf(model_dir: Path, method: str | None = None, options: dict | None = None, seed: int = 0):
    """(model, applied or None, BackboneInfo) of `hf:<model_dir>`, seeded."""
    torch.manual_seed(seed)
    model, info = build_backbone(f"hf:{model_dir}")
    applied = apply_method(model, method, options) if method else None
    return model, applied, info


def hf_inputs(model, info, n: int = 4):
    """(pixels, token ids, padding mask) of `n` seeded images and the first `n` CAPTIONS."""
    g = torch.Generator().manual_seed(1)
    px = torch.rand(n, 3, model.config.img_size, model.config.img_size, generator=g) * 2 - 1
    tok = load_tokenizer(info.tokenizer_path, model.config.text_len)
    ids, mask = tok.encode_batch(CAPTIONS[:n])
    return px, ids, mask
