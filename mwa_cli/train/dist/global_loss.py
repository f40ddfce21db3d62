"""The contrastive (softmax) and SigLIP (sigmoid) losses over the *global* batch: each rank's share, all ranks'
embeddings as negatives. Mean over ranks = the single-process loss; in a single process, `train.loss`'s own."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mwa_cli.similarity import similarity
from mwa_cli.train.dist.context import get
from mwa_cli.train.dist.gather import all_gather_with_grad, gather_groups
from mwa_cli.train.loss import MAX_LOGIT_SCALE, contrastive_loss, positive_mask, sigmoid_loss, soft_cross_entropy


def global_contrastive_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor,
                            groups: torch.Tensor | None = None) -> torch.Tensor:
    """This rank's share of the contrastive loss over the *global* batch (all ranks' embeddings as negatives).

    Rank r holds rows [r·b, (r+1)·b) of the gathered batch: its loss is `(CE(s·I_r·T_allᵀ, y_r) +
    CE(s·T_r·I_allᵀ, y_r)) / 2` with `y_r = arange(b) + r·b`. The single-process loss over the same global batch
    equals the mean of these over ranks (the gathered order is a permutation of the single-process order, applied
    to images and texts alike). Backward: the gather's reduce-scatter sums every rank's contribution into the
    owner's embeddings, which gives W × d(mean loss)/d(embedding); DDP's average over W then gives the
    single-process parameter gradient. Computed in float32 like `contrastive_loss`.
    With `groups` (this rank's pair group ids), every pair of the global batch with the same id is a positive
    (multi-positive soft targets, as `loss.contrastive_loss`); the ids are gathered like the embeddings.
    """
    if not get().enabled:
        return contrastive_loss(image_emb, text_emb, logit_scale, groups)
    img = image_emb.float()
    txt = text_emb.float()
    all_img = all_gather_with_grad(img)
    all_txt = all_gather_with_grad(txt)
    scale = logit_scale.float().clamp(max=MAX_LOGIT_SCALE).exp()
    b = img.shape[0]
    logits_i = scale * similarity(img, all_txt)
    logits_t = scale * similarity(all_img, txt).t()
    if groups is not None:
        g = groups.to(img.device)
        pos = positive_mask(g, gather_groups(g))
        return 0.5 * (soft_cross_entropy(logits_i, pos) + soft_cross_entropy(logits_t, pos))
    labels = torch.arange(b, device=img.device) + get().rank * b
    return 0.5 * (F.cross_entropy(logits_i, labels) + F.cross_entropy(logits_t, labels))


def global_sigmoid_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor,
                        logit_bias: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
    """SigLIP's loss over the global batch, this rank's share: its image rows against every rank's texts,
    `-Σ log σ(z·(s·I_r·T_allᵀ + b)) / b_r` (z = +1 on the rank's diagonal block offset by rank·b, or wherever the
    group ids match when `groups` is given). Mean over ranks = the single-process loss `-Σ / B`."""
    if not get().enabled:
        return sigmoid_loss(image_emb, text_emb, logit_scale, logit_bias, groups)
    img = image_emb.float()
    all_txt = all_gather_with_grad(text_emb.float())
    logits = similarity(img, all_txt) * logit_scale.float().exp() + logit_bias.float()
    b = img.shape[0]
    if groups is not None:
        g = groups.to(logits.device)
        z = 2 * positive_mask(g, gather_groups(g)) - 1
    else:
        z = -torch.ones_like(logits)
        idx = torch.arange(b, device=logits.device)
        z[idx, idx + get().rank * b] = 1.0
    return -F.logsigmoid(z * logits).sum() / b


def global_model_loss(model, image_emb: torch.Tensor, text_emb: torch.Tensor,
                      groups: torch.Tensor | None = None) -> torch.Tensor:
    """`loss.model_loss` with global negatives: this rank's share (mean over ranks = the single-process loss)."""
    if getattr(model, "loss_kind", "softmax") == "sigmoid":
        return global_sigmoid_loss(image_emb, text_emb, model.logit_scale, model.logit_bias, groups)
    return global_contrastive_loss(image_emb, text_emb, model.logit_scale, groups)
