"""The training input pipeline with several DataLoader workers (the GPU default) gives exactly the batches of the
in-process loader (0 workers): same pairs, crop boxes and flips, step by step, across epoch boundaries and a resume.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mwa_cli.train.data import PairTable, TrainBatches, make_loader
from tests.helpers.data_dir import make_train_data_dir as train_make_data_dir

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_PAIRS = 40
BATCH = 8  # 5 steps per epoch


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> TrainBatches:
    data = train_make_data_dir(tmp_path_factory.mktemp("loader"), n_images=N_PAIRS + 8)
    g = torch.Generator().manual_seed(0)
    pairs = PairTable(image_rows=np.arange(N_PAIRS, dtype=np.int64),
                      input_ids=torch.randint(5, 100, (N_PAIRS, 12), generator=g),
                      padding_mask=torch.zeros(N_PAIRS, 12, dtype=torch.long),
                      flip_ok=np.arange(N_PAIRS) % 3 != 0)
    return TrainBatches(pairs, data, 32, N_PAIRS + 8, BATCH, seed=3)


def _batches(ds: TrainBatches, start: int, stop: int, workers: int) -> list[dict]:
    loader = make_loader(ds, start, workers=workers, pin_memory=False, stop_step=stop)
    return [b for b in loader]


def _assert_same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x["step"] == y["step"]
        for key in ("index", "images", "input_ids", "padding_mask", "boxes", "flip"):
            assert torch.equal(x[key], y[key]), f"step {x['step']}: {key} differs"


def test_batch_index_owns_its_memory(dataset):
    """The index tensor a worker sends is not a view of the cached epoch order (whose storage the sender moves)."""
    batch = dataset[7]
    order = dataset._orders[dataset.position(7)[0]]
    assert batch["index"].untyped_storage().data_ptr() != order.untyped_storage().data_ptr()
    assert torch.equal(batch["index"], order[2 * BATCH:3 * BATCH])


def test_worker_batches_equal_in_process_batches(dataset):
    """60 steps = 12 epochs with 3 workers against 0 workers (a race in a worker would scramble pair indices)."""
    _assert_same(_batches(dataset, 0, 60, workers=3), _batches(dataset, 0, 60, workers=0))


def test_resumed_loader_continues_the_same_batches(dataset):
    """A loader started at step 13 (a resume mid-epoch) yields the steps 13.. of an uninterrupted one."""
    full = _batches(dataset, 0, 24, workers=2)
    resumed = _batches(dataset, 13, 24, workers=2)
    _assert_same(full[13:], resumed)


def test_feature_cache_batches_with_workers(dataset):
    """Index-only batches (feature cache) through workers equal the in-process ones too."""
    ds = TrainBatches(dataset.pairs, dataset.data_dir, 32, N_PAIRS + 8, BATCH, seed=3, augment=False,
                      load_images=False)
    a = _batches(ds, 0, 20, workers=2)
    b = _batches(ds, 0, 20, workers=0)
    for x, y in zip(a, b):
        assert torch.equal(x["index"], y["index"]) and torch.equal(x["padding_mask"], y["padding_mask"])
