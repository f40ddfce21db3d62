"""Symmetric image-text contrastive loss (CLIP / BEiT-3 `ClipLoss` with `--loss both`), with optional
multi-positive targets: pairs that share a group id (identical caption text, or the same label) are positives
for each other instead of negatives (docs/decisions.md, "Repeated captions")."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mwa_cli.similarity import similarity

MAX_LOGIT_SCALE = math.log(100.0)  # temperature floor 0.01, as CLIP: keeps from-scratch training stable


def positive_mask(row_groups: torch.Tensor, col_groups: torch.Tensor) -> torch.Tensor:
    """[R, C] float: 1 where row i and column j carry the same group id (each row's own pair included)."""
    return (row_groups.reshape(-1, 1) == col_groups.reshape(1, -1)).float()


def soft_cross_entropy(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Mean over rows of `-Σ_j t_ij log softmax(logits)_ij` with `t_ij = positives_ij / Σ_j positives_ij`: the
    probability mass is shared evenly among a row's positives (UniCL / SupCon-"out" style). With one positive per
    row this is the ordinary cross-entropy."""
    targets = positives / positives.sum(dim=1, keepdim=True)
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def contrastive_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor,
                     groups: torch.Tensor | None = None) -> torch.Tensor:
    """`(CE(s·I·Tᵀ, y) + CE(s·T·Iᵀ, y)) / 2` with `s = exp(logit_scale)`; row i of each side is a positive pair.

    `groups` [B] (optional): pairs with equal ids are positives of each other (multi-positive soft targets);
    None keeps the one-positive-per-row loss exactly. Embeddings are expected L2-normalised (the model's heads
    do it); image embeddings may be multi-vector ([B, Q, d], BLIP-2: the score is the best query token,
    `mwa_cli.similarity`). The logits are computed in float32 whatever the autocast dtype, so bf16/fp16 training
    does not lose the softmax's precision.
    """
    img = image_emb.float()
    txt = text_emb.float()
    scale = logit_scale.float().clamp(max=MAX_LOGIT_SCALE).exp()
    logits = scale * similarity(img, txt)
    if groups is not None:
        pos = positive_mask(groups.to(logits.device), groups.to(logits.device))
        return 0.5 * (soft_cross_entropy(logits, pos) + soft_cross_entropy(logits.t(), pos.t()))
    labels = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


def sigmoid_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor,
                 logit_bias: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
    """SigLIP's pairwise sigmoid loss: `-Σ log σ(z_ij (s·I·Tᵀ + b)_ij) / B` with z = +1 on the diagonal, -1 off it
    (as transformers' `SiglipModel(return_loss=True)`); float32 logits, no clamp on the scale (as big_vision).
    With `groups`, z = +1 wherever the two pairs share a group id."""
    img = image_emb.float()
    txt = text_emb.float()
    logits = similarity(img, txt) * logit_scale.float().exp() + logit_bias.float()
    n = logits.shape[0]
    if groups is not None:
        g = groups.to(logits.device)
        z = 2 * positive_mask(g, g) - 1
    else:
        z = 2 * torch.eye(n, device=logits.device, dtype=logits.dtype) - 1
    return -F.logsigmoid(z * logits).sum() / n


def model_loss(model, image_emb: torch.Tensor, text_emb: torch.Tensor,
               groups: torch.Tensor | None = None) -> torch.Tensor:
    """The loss a backbone was pretrained with: sigmoid (SigLIP: `model.loss_kind == "sigmoid"`, with its
    `logit_bias`) or the softmax contrastive loss (BEiT-3, CLIP); `groups` as in `contrastive_loss`."""
    if getattr(model, "loss_kind", "softmax") == "sigmoid":
        return sigmoid_loss(image_emb, text_emb, model.logit_scale, model.logit_bias, groups)
    return contrastive_loss(image_emb, text_emb, model.logit_scale, groups)


def loss_parameters(model) -> list[torch.Tensor]:
    """The parameters `model_loss` reads itself, outside the encoders: the temperature, and SigLIP's bias."""
    if getattr(model, "loss_kind", "softmax") == "sigmoid":
        return [model.logit_scale, model.logit_bias]
    return [model.logit_scale]
