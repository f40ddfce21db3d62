"""The largest batch that fits (`--batch-size auto`, bench/max_batch_24g.py): the search, the probe (which counts
the optimizer's moments and leaves the weights alone), and the bench's memory cap."""

from __future__ import annotations

import pytest
import torch

from mwa_cli.errors import EXIT_OOM, MwaError
from mwa_cli.train.batch_probe import find_max_batch, largest_fitting, optimizer_standin, probe_fits
from mwa_cli.train.trainer import OOM_ERRORS, build_trainer
from tests.helpers.paths import REPO, load_script

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _fits_below(limit: int, tried: list[int] | None = None):
    def fits(b: int) -> bool:
        if tried is not None:
            tried.append(b)
        return b <= limit
    return fits


@pytest.mark.parametrize("limit,cap,resolution,want", [(100, 1024, None, 64), (100, 1024, 8, 96), (127, 1024, 1, 127),
                                                       (8, 1024, 8, 8), (5000, 1024, 8, 1024), (7, 1024, 8, 0),
                                                       (100, 100, 8, 100), (300, 200, 8, 200), (3, 4, None, 0),
                                                       (4, 4, None, 4)])
def test_the_search_finds_the_largest_batch_that_fits(limit, cap, resolution, want):
    assert largest_fitting(_fits_below(limit), cap, resolution=resolution) == want


def test_the_search_takes_few_probes_and_never_retries_a_size():
    tried: list[int] = []
    assert largest_fitting(_fits_below(389, tried), 2048, resolution=8) == 384
    assert tried[:7] == [8, 16, 32, 64, 128, 256, 512]  # doubling, then bisection between 256 and 512
    assert len(tried) == len(set(tried)) <= 7 + 5


def _oom_above(trainer, limit: int, seen: list[int]):
    real = trainer._encode_image

    def encode_image(px):
        seen.append(px.shape[0])
        if px.shape[0] > limit:
            raise OOM_ERRORS[0]("CUDA out of memory (simulated)")
        return real(px)
    trainer._encode_image = encode_image


def test_batch_size_auto_probes_training_steps_and_leaves_the_weights_alone():
    trainer = build_trainer("beit3-tiny-test", "mwa", device="cpu", precision="fp32")
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    seen: list[int] = []
    _oom_above(trainer, 40, seen)
    said: list[str] = []
    assert find_max_batch(trainer, 256, 16, said.append) == 32
    assert find_max_batch(trainer, 256, 16, said.append, resolution=8) == 40
    assert "largest micro-batch that fits is 40" in said[-1]
    assert all(torch.equal(p, before[n]) for n, p in trainer.model.named_parameters())
    assert all(p.grad is None for p in trainer.model.parameters()) and not trainer.optimizer.state


def test_batch_size_auto_says_when_nothing_fits():
    trainer = build_trainer("beit3-tiny-test", "nke", device="cpu", precision="fp32")
    _oom_above(trainer, 4, [])
    with pytest.raises(MwaError, match="even with a batch of 8") as exc:
        find_max_batch(trainer, 256, 16, lambda _t: None)
    assert exc.value.exit_code == EXIT_OOM


def test_the_probe_holds_the_optimizer_moments_it_does_not_have_yet():
    trainer = build_trainer("beit3-tiny-test", "lora", device="cpu", precision="fp32")
    trainable = [p for p in trainer.model.parameters() if p.requires_grad]
    standin = optimizer_standin(trainer)
    assert len(standin) == 2 * len(trainable)
    assert sum(t.numel() for t in standin) == 2 * sum(p.numel() for p in trainable)
    trainer.step(trainer.random_batch(4))  # AdamW has its moments now: nothing more to hold
    assert optimizer_standin(trainer) == []
    assert probe_fits(trainer, 4, 16)


def _bench():
    return load_script(REPO / "bench" / "max_batch_24g.py")


def test_the_bench_caps_the_allocator_from_the_cards_total():
    bench = _bench()
    assert bench.cap_fraction(24 * 2**30, 80 * 2**30) == pytest.approx(0.3)
    assert bench.cap_fraction(24 * 2**30, 16 * 2**30) == 1.0
    with pytest.raises(ValueError):
        bench.cap_fraction(0, 80 * 2**30)


def test_the_bench_probes_the_feature_cache_variant_from_hidden_states():
    bench = _bench()
    trainer = build_trainer("beit3-tiny-test", "mwa", method_options={"layers": "top-1"}, device="cpu",
                            precision="fp32")
    trainer.use_feature_cache(trainer.applied.lowest_trainable_layer)
    px, txt, mask = bench.cached_inputs(trainer, 4, 16)
    assert px.shape == (4, 17, 64) and txt.shape == (4, 16, 64) and mask.shape == (4, 16)
    assert probe_fits(trainer, 4, 16, lambda b: bench.cached_inputs(trainer, b, 16))


def test_the_probe_runs_past_ddp_and_puts_it_back():
    """Under torchrun each rank probes its own GPU: no DDP forward (its collectives would wait for the other
    ranks' probes), and the wrapper back in place afterwards, also when nothing fits."""
    trainer = build_trainer("beit3-tiny-test", "nke", device="cpu", precision="fp32")
    wrapper = object()  # stands for the DDP wrapper of a distributed run
    trainer._ddp = wrapper
    during: list[object] = []
    real = trainer._forward_backward

    def forward_backward(*args):
        during.append(trainer._ddp)
        return real(*args)
    trainer._forward_backward = forward_backward
    _oom_above(trainer, 16, [])
    assert find_max_batch(trainer, 256, 16, lambda _t: None) == 16
    assert during == [None, None, None] and trainer._ddp is wrapper
    _oom_above(trainer, 4, [])
    with pytest.raises(MwaError, match="even with a batch of 8"):
        find_max_batch(trainer, 256, 16, lambda _t: None)
    assert trainer._ddp is wrapper
