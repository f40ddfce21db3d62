"""Symmetric image-text contrastive loss (CLIP / BEiT-3 `ClipLoss` with `--loss both`)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MAX_LOGIT_SCALE = math.log(100.0)  # temperature floor 0.01, as CLIP: keeps from-scratch training stable


def contrastive_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """`(CE(s·I·Tᵀ, y) + CE(s·T·Iᵀ, y)) / 2` with `s = exp(logit_scale)`; row i of each side is a positive pair.

    Embeddings are expected L2-normalised (the model's heads do it). The logits are computed in float32 whatever
    the autocast dtype, so bf16/fp16 training does not lose the softmax's precision.
    """
    img = image_emb.float()
    txt = text_emb.float()
    scale = logit_scale.float().clamp(max=MAX_LOGIT_SCALE).exp()
    logits = scale * img @ txt.t()
    labels = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
