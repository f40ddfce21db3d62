"""Worker for tests/unit/train/test_cache_share.py, run by a real torchrun (2 CPU processes, gloo):

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/helpers/dist_cache_worker.py OUT LOCATION

Each rank fills the feature cache of `cache_pairs()` with the other rank (`CacheShare`), saves its whole cache to
OUT-rank{r}.pt (with the names of its disk files), then takes two DDP steps from the cache; rank 0 saves the
trainable parameters to OUT-params.pt. The test compares with one process.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from mwa_cli.models.preprocess import to_pixels
from mwa_cli.train.dist.cache_share import CacheShare
from mwa_cli.train.dist.context import init_from_env, teardown
from mwa_cli.train.dist.sharding import shard_batch
from mwa_cli.train.feature_cache import fill_feature_cache
from mwa_cli.train.trainer import build_trainer

SIZE, CHUNK, BATCH = 32, 5, 8  # 6 images and 12 captions in chunks of 5: the ranks get uneven shares


def cache_pairs(n_images: int = 6, captions_per_image: int = 2, size: int = SIZE, text_len: int = 12, seed: int = 0):
    """Random uint8 images, each pair's image row, token ids and padding masks (varied lengths)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n_images, size, size, 3), dtype=torch.uint8, generator=g).numpy()
    rows = np.repeat(np.arange(n_images), captions_per_image)
    ids = torch.randint(4, 60, (len(rows), text_len), generator=g)
    lengths = torch.randint(3, text_len + 1, (len(rows),), generator=g)
    mask = (torch.arange(text_len)[None] >= lengths[:, None]).long()
    return images, rows, ids.masked_fill(mask.bool(), 1), mask


def cache_trainer(distributed: bool = False):
    return build_trainer("beit3-tiny-test", "mwa", method_options={"layers": "top-1", "dropout": 0.0}, device="cpu",
                         precision="fp32", drop_path=0.0, lr=5e-3, total_steps=10, seed=0, distributed=distributed)


def step_batches():
    return [torch.tensor([(step * 5 + j) % 12 for j in range(BATCH)]) for step in range(2)]


def main(out: str, location: str) -> None:
    torch.set_num_threads(1)
    ctx = init_from_env(torch.device("cpu"))
    assert ctx.world_size == 2, ctx
    images, rows, ids, mask = cache_pairs()
    trainer = cache_trainer(distributed=True)
    k = trainer.applied.lowest_trainable_layer
    folder = Path(out).parent / "cache"
    fc = fill_feature_cache(trainer.model, k, images, rows, ids, mask, lambda u8: to_pixels(u8, SIZE),
                            device=ctx.device, dtype=None, location=location, folder=folder, batch_size=CHUNK,
                            share=CacheShare(ctx))
    torch.save({"images": fc.images.clone(), "captions": fc.captions.clone(), "location": fc.location,
                "files": sorted(p.name for p in folder.glob("*.npy"))}, f"{out}-rank{ctx.rank}.pt")
    ctx.barrier()  # both ranks' files exist before either is removed
    trainer.use_feature_cache(k)
    for index in step_batches():
        batch = fc.inputs({"index": index, "padding_mask": mask[index]}, ctx.device)
        trainer.step(shard_batch(batch, ctx.rank, ctx.world_size))
    fc.close()
    if ctx.is_main:
        torch.save({n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad},
                   f"{out}-params.pt")
    teardown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
