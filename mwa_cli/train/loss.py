"""Symmetric image-text contrastive loss (CLIP / BEiT-3 `ClipLoss` with `--loss both`) and SigLIP's sigmoid loss,
with optional multi-positive targets: pairs that share a group id (identical caption text, or the same label) are
positives for each other instead of negatives (docs/decisions.md, "Repeated captions").

One loss for one process and for several: a `Gather` says where this process's rows meet the negatives. `LOCAL`
(identity) in one process; `train.dist.gather.rank_gather()` under DDP, where each rank computes its rows'
share against every rank's embeddings (the mean over ranks is the one-process loss of the global batch)."""

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


class Gather:
    """Identity: the negatives are this process's own batch. Subclassed by train.dist.gather for several ranks."""

    rank = 0  # this process's rows are rows [rank·b, (rank+1)·b) of the gathered batch
    local = True

    def embeddings(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def groups(self, g: torch.Tensor) -> torch.Tensor:
        return g


LOCAL = Gather()


def contrastive_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor,
                     groups: torch.Tensor | None = None, gather: Gather = LOCAL) -> torch.Tensor:
    """`(CE(s·I·Tᵀ, y) + CE(s·T·Iᵀ, y)) / 2` with `s = exp(logit_scale)`; row i of each side is a positive pair.

    `groups` [B] (optional): pairs with equal ids are positives of each other (multi-positive soft targets);
    None keeps the one-positive-per-row loss exactly. Embeddings are expected L2-normalised (the model's heads
    do it); image embeddings may be multi-vector ([B, Q, d], BLIP-2: the score is the best query token,
    `mwa_cli.similarity`). The logits are computed in float32 whatever the autocast dtype, so bf16/fp16 training
    does not lose the softmax's precision. With a rank's `gather`, the columns are every rank's embeddings and
    this rank's share is returned; the gather's backward sums every rank's contribution into the owner's rows.
    """
    img = image_emb.float()
    txt = text_emb.float()
    scale = logit_scale.float().clamp(max=MAX_LOGIT_SCALE).exp()
    logits_i = scale * similarity(img, gather.embeddings(txt))
    logits_t = logits_i.t() if gather.local else scale * similarity(gather.embeddings(img), txt).t()
    if groups is not None:
        g = groups.to(logits_i.device)
        pos = positive_mask(g, gather.groups(g))
        return 0.5 * (soft_cross_entropy(logits_i, pos) + soft_cross_entropy(logits_t, pos))
    labels = torch.arange(img.shape[0], device=logits_i.device) + gather.rank * img.shape[0]
    return 0.5 * (F.cross_entropy(logits_i, labels) + F.cross_entropy(logits_t, labels))


def sigmoid_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor,
                 logit_bias: torch.Tensor, groups: torch.Tensor | None = None, gather: Gather = LOCAL) -> torch.Tensor:
    """SigLIP's pairwise sigmoid loss: `-Σ log σ(z_ij (s·I·Tᵀ + b)_ij) / B` with z = +1 on the diagonal, -1 off it
    (as transformers' `SiglipModel(return_loss=True)`); float32 logits, no clamp on the scale (as big_vision).
    With `groups`, z = +1 wherever the two pairs share a group id. With a rank's `gather`: this rank's image rows
    against every rank's texts, divided by this rank's row count (the mean over ranks is the one-process loss)."""
    img = image_emb.float()
    logits = similarity(img, gather.embeddings(text_emb.float())) * logit_scale.float().exp() + logit_bias.float()
    b = img.shape[0]
    if groups is not None:
        g = groups.to(logits.device)
        z = 2 * positive_mask(g, gather.groups(g)) - 1
    else:
        z = -torch.ones_like(logits)
        rows = torch.arange(b, device=logits.device)
        z[rows, rows + gather.rank * b] = 1.0
    return -F.logsigmoid(z * logits).sum() / b


def model_loss(model, image_emb: torch.Tensor, text_emb: torch.Tensor,
               groups: torch.Tensor | None = None, gather: Gather = LOCAL) -> torch.Tensor:
    """The loss a backbone was pretrained with: sigmoid (SigLIP: `model.loss_kind == "sigmoid"`, with its
    `logit_bias`) or the softmax contrastive loss (BEiT-3, CLIP); `groups` and `gather` as in `contrastive_loss`."""
    if getattr(model, "loss_kind", "softmax") == "sigmoid":
        return sigmoid_loss(image_emb, text_emb, model.logit_scale, model.logit_bias, groups, gather)
    return contrastive_loss(image_emb, text_emb, model.logit_scale, groups, gather)


def loss_parameters(model) -> list[torch.Tensor]:
    """The parameters `model_loss` reads itself, outside the encoders: the temperature, and SigLIP's bias."""
    if getattr(model, "loss_kind", "softmax") == "sigmoid":
        return [model.logit_scale, model.logit_bias]
    return [model.logit_scale]
