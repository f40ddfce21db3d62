"""Worker for tests/e2e/test_distributed.py: multi-positive targets with global negatives (2 CPU processes, gloo).

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/helpers/dist_multipos_worker.py OUT.pt

(1) The contrastive and sigmoid losses with a rank's gather and group ids on each rank's strided share of fixed embeddings:
rank 0 saves the mean loss over ranks and every row's embedding gradient (averaged over ranks, in global order).
(2) One Trainer forward/backward through DDP on a batch with a `group` key: rank 0 saves loss and gradients.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from mwa_cli.train.dist.context import init_from_env, teardown
from mwa_cli.train.dist.gather import rank_gather
from mwa_cli.train.dist.sharding import shard_batch
from mwa_cli.train.loss import contrastive_loss, sigmoid_loss
from mwa_cli.train.trainer import build_trainer

BATCH = 8
GROUPS = torch.tensor([0, 1, 0, 2, 1, 0, 3, 2])


def embeddings(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(BATCH, 6, generator=g), dim=1), F.normalize(torch.randn(BATCH, 6, generator=g), dim=1)


def _gather_rows(t: torch.Tensor, ctx) -> torch.Tensor:
    parts = [torch.empty_like(t) for _ in range(ctx.world_size)]
    torch.distributed.all_gather(parts, t.contiguous())
    out = torch.empty((BATCH,) + tuple(t.shape[1:]), dtype=t.dtype)
    for r, p in enumerate(parts):
        out[r::ctx.world_size] = p
    return out


def main(out: str) -> None:
    torch.set_num_threads(1)
    ctx = init_from_env(torch.device("cpu"))
    assert ctx.world_size == 2, ctx
    sl = ctx.shard_slice()
    img_all, txt_all = embeddings()
    res = {}
    for kind in ("softmax", "sigmoid"):
        img = img_all[sl].clone().requires_grad_(True)
        txt = txt_all[sl].clone().requires_grad_(True)
        scale = torch.tensor(2.0)
        if kind == "softmax":
            loss = contrastive_loss(img, txt, scale, GROUPS[sl], rank_gather())
        else:
            loss = sigmoid_loss(img, txt, scale, torch.tensor(-1.0), GROUPS[sl], rank_gather())
        loss.backward()
        res[kind] = {"loss": float(ctx.mean(loss.detach())),
                     "img_grad": _gather_rows(img.grad / ctx.world_size, ctx),
                     "txt_grad": _gather_rows(txt.grad / ctx.world_size, ctx)}
    trainer = build_trainer("beit3-tiny-test", "mwa", method_options={"dropout": 0.0}, device="cpu",
                            precision="fp32", drop_path=0.0, seed=0, total_steps=10, distributed=True)
    batch = trainer.random_batch(BATCH, seed=1)
    batch["group"] = GROUPS.clone()
    batch = shard_batch(batch, ctx.rank, ctx.world_size)
    loss = trainer._forward_backward(trainer.pixels(batch), batch["input_ids"], batch["padding_mask"], batch["group"])
    res["trainer"] = {"loss": float(ctx.mean(loss.detach())),
                      "grads": {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters()
                                if p.requires_grad and p.grad is not None}}
    if ctx.is_main:
        torch.save(res, out)
    teardown()


if __name__ == "__main__":
    main(sys.argv[1])
