"""The CPU-visible parts of the CUDA-graph step: learning rates a graph can read, and what a graph is keyed on.
(The capture itself needs a GPU: bench/check_step_graph.py compares replayed and eager steps there.)"""

from __future__ import annotations

import pytest
import torch

from mwa_cli.train.optim import build_optimizer, make_capturable
from mwa_cli.train.schedule import WarmupCosine
from mwa_cli.train.step_graph import batch_key


def _optimizer():
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))
    groups = [{"params": [a], "lr": 1e-3, "lr_scale": 1.0}, {"params": [b], "lr": 1e-3, "lr_scale": 0.5}]
    return build_optimizer(groups, torch.device("cpu"))


def test_schedule_fills_tensor_rates_in_place():
    opt = _optimizer()
    make_capturable(opt, torch.device("cpu"))
    tensors = [g["lr"] for g in opt.param_groups]
    sched = WarmupCosine(2e-3, warmup_frac=0.0)
    sched.fit(10)
    sched.apply(opt, 0)
    assert [g["lr"] is t for g, t in zip(opt.param_groups, tensors)] == [True, True]  # same storage: graphs see it
    assert [float(t) for t in tensors] == pytest.approx([2e-3, 1e-3], rel=1e-6)  # float32 on the device
    sched.apply(opt, 5)
    assert float(tensors[0]) == pytest.approx(sched.lr_at(5), rel=1e-6)
    assert sched.lr_at(5) != 2e-3


def test_float_rates_stay_floats():
    opt = _optimizer()
    WarmupCosine(2e-3, warmup_frac=0.0).apply(opt, 0)
    assert [g["lr"] for g in opt.param_groups] == [2e-3, 1e-3]


def test_make_capturable_after_loading_an_eager_checkpoint():
    opt = _optimizer()
    for g in opt.param_groups:
        for p in g["params"]:
            p.grad = torch.ones_like(p)
    opt.step()
    state = opt.state_dict()
    fresh = _optimizer()
    fresh.load_state_dict(state)
    make_capturable(fresh, torch.device("cpu"))
    assert all(g["capturable"] and isinstance(g["lr"], torch.Tensor) for g in fresh.param_groups)
    steps = [s["step"] for s in fresh.state.values()]
    assert steps and all(s.dtype == torch.float32 and float(s) == 1.0 for s in steps)


def test_a_graph_is_specific_to_shapes_and_dtypes():
    ids = torch.zeros(4, 16, dtype=torch.long)
    px = torch.zeros(4, 3, 8, 8)
    assert batch_key((px, ids, None)) == batch_key((px.clone(), ids.clone(), None))
    assert batch_key((px, ids, None)) != batch_key((px, torch.zeros(4, 24, dtype=torch.long), None))
    assert batch_key((px, ids, None)) != batch_key((px.half(), ids, None))
    assert batch_key((px, ids, None)) != batch_key((px, ids, torch.zeros(4, dtype=torch.long)))
