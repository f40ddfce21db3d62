"""Symmetric image-text contrastive loss (CLIP / BEiT-3 `ClipLoss` with `--loss both`)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mwa_cli.similarity import similarity

MAX_LOGIT_SCALE = math.log(100.0)  # temperature floor 0.01, as CLIP: keeps from-scratch training stable


def contrastive_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """`(CE(s·I·Tᵀ, y) + CE(s·T·Iᵀ, y)) / 2` with `s = exp(logit_scale)`; row i of each side is a positive pair.

    Embeddings are expected L2-normalised (the model's heads do it); image embeddings may be multi-vector
    ([B, Q, d], BLIP-2: the score is the best query token, `mwa_cli.similarity`). The logits are computed in float32 whatever
    the autocast dtype, so bf16/fp16 training does not lose the softmax's precision.
    """
    img = image_emb.float()
    txt = text_emb.float()
    scale = logit_scale.float().clamp(max=MAX_LOGIT_SCALE).exp()
    logits = scale * similarity(img, txt)
    labels = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


def sigmoid_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor,
                 logit_bias: torch.Tensor) -> torch.Tensor:
    """SigLIP's pairwise sigmoid loss: `-Σ log σ(z_ij (s·I·Tᵀ + b)_ij) / B` with z = +1 on the diagonal, -1 off it
    (as transformers' `SiglipModel(return_loss=True)`); float32 logits, no clamp on the scale (as big_vision)."""
    img = image_emb.float()
    txt = text_emb.float()
    logits = similarity(img, txt) * logit_scale.float().exp() + logit_bias.float()
    n = logits.shape[0]
    z = 2 * torch.eye(n, device=logits.device, dtype=logits.dtype) - 1
    return -F.logsigmoid(z * logits).sum() / n


def model_loss(model, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
    """The loss a backbone was pretrained with: sigmoid (SigLIP: `model.loss_kind == "sigmoid"`, with its
    `logit_bias`) or the softmax contrastive loss (BEiT-3, CLIP)."""
    if getattr(model, "loss_kind", "softmax") == "sigmoid":
        return sigmoid_loss(image_emb, text_emb, model.logit_scale, model.logit_bias)
    return contrastive_loss(image_emb, text_emb, model.logit_scale)
