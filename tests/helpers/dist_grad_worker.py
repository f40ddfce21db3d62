"""Worker for tests/e2e/test_distributed.py, run by a real torchrun (2 CPU processes, gloo):

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/helpers/dist_grad_worker.py OUT.pt

For each case (method, micro-batch): the rank's strided share of one global batch → forward/backward through the
Trainer's DDP path (gathered embeddings, global negatives; micro-batches keep the whole batch's loss) → rank 0
saves the averaged gradients and the global loss; then two optimizer steps → rank 0 saves the trainable
parameters. The test compares with one process.
"""

from __future__ import annotations

import sys

import torch

from mwa_cli.train.dist.context import init_from_env, teardown
from mwa_cli.train.dist.sharding import shard_batch
from mwa_cli.train.trainer import build_trainer

CASES = [("mwa", None), ("mwa", 4), ("full-ft", None), ("full-ft", 4), ("lora", None)]
BATCH = 8


def main(out: str) -> None:
    torch.set_num_threads(1)
    ctx = init_from_env(torch.device("cpu"))
    assert ctx.world_size == 2, ctx
    results = {}
    for method, micro in CASES:
        trainer = build_trainer("beit3-tiny-test", method, method_options=None if method == "full-ft" else {"dropout": 0.0}, device="cpu", precision="fp32", drop_path=0.0,
                                seed=0, total_steps=10, distributed=True,
                                micro_batch=None if micro is None else micro // ctx.world_size)
        assert trainer._ddp is not None
        batch = shard_batch(trainer.random_batch(BATCH, seed=1), ctx.rank, ctx.world_size)
        px = trainer.pixels(batch)
        loss = trainer._forward_backward(px, batch["input_ids"], batch["padding_mask"])
        grads = {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters()
                 if p.requires_grad and p.grad is not None}
        trainer.optimizer.zero_grad(set_to_none=True)
        losses = []
        for s in range(2):
            b = shard_batch(trainer.random_batch(BATCH, seed=10 + s), ctx.rank, ctx.world_size)
            losses.append(float(ctx.mean(trainer.step(b)).item()))
        params = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
        results[f"{method}-{micro}"] = {"loss": float(ctx.mean(loss).item()), "grads": grads, "params": params,
                                        "step_losses": losses}
    if ctx.is_main:
        torch.save(results, out)
    teardown()


if __name__ == "__main__":
    main(sys.argv[1])
