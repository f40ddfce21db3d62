"""The feature cache over 2 ranks (gloo, 2 CPU processes): each fills half the chunks, every rank ends with the
whole cache bit-identical to one process's, and DDP steps from it give the single process's weights."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from mwa_cli.models.preprocess import to_pixels
from mwa_cli.train.dist.cache_share import CacheShare, fill_rows
from mwa_cli.train.dist.context import DistContext
from mwa_cli.train.feature_cache import fill_feature_cache
from tests.helpers.dist_cache_worker import CHUNK, SIZE, cache_pairs, cache_trainer, step_batches
from tests.helpers.paths import HELPERS, REPO


def test_one_process_share_fills_every_chunk_in_order():
    store, seen = torch.zeros(7), []
    CacheShare(DistContext()).fill(store, 7, 3, lambda lo, hi: torch.arange(lo, hi, dtype=torch.float32),
                                   seen.append)
    assert torch.equal(store, torch.arange(7.0)) and seen == [3, 3, 1]
    other = torch.zeros(7)
    fill_rows(other, 7, 3, lambda lo, hi: torch.arange(lo, hi, dtype=torch.float32), lambda n: None)
    assert torch.equal(other, store)
    assert CacheShare(DistContext()).location("gpu") == "gpu" and CacheShare(DistContext()).file_tag() == ""


@pytest.mark.slow
@pytest.mark.parametrize("location", ["ram", "disk"])
def test_two_ranks_fill_one_cache_identical_to_one_process(tmp_path, location, one_torch_thread):
    out = tmp_path / "w"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(HELPERS / "dist_cache_worker.py"), str(out), location], env=env,
                          capture_output=True, text=True, timeout=300, cwd=str(REPO))
    assert proc.returncode == 0, proc.stderr[-3000:]
    images, rows, ids, mask = cache_pairs()
    single = cache_trainer()
    k = single.applied.lowest_trainable_layer
    fc = fill_feature_cache(single.model, k, images, rows, ids, mask, lambda u8: to_pixels(u8, SIZE),
                            device=torch.device("cpu"), dtype=None, location="ram", batch_size=CHUNK)
    ranks = [torch.load(f"{out}-rank{r}.pt") for r in (0, 1)]
    for got in ranks:  # the same chunks through the same layers: not close, equal
        assert got["location"] == location
        assert torch.equal(got["images"], fc.images) and torch.equal(got["captions"], fc.captions)
    if location == "disk":  # one pair of files per rank in the shared folder, all removed at the end
        assert ranks[1]["files"] == ["feature_cache_captions-rank1.npy", "feature_cache_captions.npy",
                                     "feature_cache_images-rank1.npy", "feature_cache_images.npy"]
        assert not list((tmp_path / "cache").glob("*.npy"))
    single.use_feature_cache(k)
    for index in step_batches():
        single.step(fc.inputs({"index": index, "padding_mask": mask[index]}, torch.device("cpu")))
    params = torch.load(f"{out}-params.pt")
    for n, p in single.model.named_parameters():
        if p.requires_grad:  # Adam turns fp32 all-reduce round-off of near-zero grads into up to ~lr
            torch.testing.assert_close(params[n], p.detach(), atol=5e-3, rtol=1e-3, msg=n)
