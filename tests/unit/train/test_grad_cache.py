"""Gradient accumulation that keeps every negative (GradCache): a batch split into micro-batches trains the whole
batch's contrastive loss, with the same gradients, dropout and drop path included."""

from __future__ import annotations

import pytest
import torch

from mwa_cli.train.loss import model_loss
from mwa_cli.train.trainer import OOM_ERRORS, RandomDraws, build_trainer

TINY = {"img_size": 32, "patch_size": 8, "vocab_size": 300, "embed_dim": 32, "depth": 3, "num_heads": 2,
        "ffn_dim": 64, "text_len": 12}
GROUPS = torch.tensor([0, 1, 0, 2, 3, 1, 4, 5])  # positives that straddle the micro-batches of 2
OPTIONS = {"mwa": {"dropout": 0.3}, "full-ft": None}


def _trainer(method: str, micro: int | None = None, drop_path: float = 0.2, options="default"):
    opts = OPTIONS[method] if options == "default" else options
    return build_trainer(TINY, method, method_options=opts, device="cpu", precision="fp32", drop_path=drop_path,
                         seed=0, micro_batch=micro)


def _inputs(trainer, seed: int = 1):
    batch = trainer.random_batch(8, seed=seed)
    return trainer.pixels(batch), batch["input_ids"], batch["padding_mask"]


def _grads(trainer) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters()
            if p.requires_grad and p.grad is not None}


def _assert_same_grads(got: dict, want: dict) -> None:
    assert set(got) == set(want) and "logit_scale" in want
    for name, g in want.items():  # fp32 sums in another order: 1e-6 of the tensor's largest gradient
        scale = max(1.0, float(g.abs().max()))
        torch.testing.assert_close(got[name], g, atol=1e-6 * scale, rtol=1e-5, msg=name)


def _one_graph_reference(trainer, px, ids, mask, groups, chunks):
    """The whole batch's loss in one autograd graph, the encoders run chunk by chunk (the random draws GradCache's
    first pass makes), one backward."""
    images, texts = [], []
    for c in chunks:
        img, txt = trainer._encode_pair(px[c], ids[c], mask[c])
        images.append(img)
        texts.append(txt)
    loss = model_loss(trainer.model, torch.cat(images), torch.cat(texts), groups)
    loss.backward()
    return loss.detach()


@pytest.mark.parametrize("method", ["mwa", "full-ft"])
def test_four_micro_batches_give_the_whole_batch_loss_and_gradients_with_dropout_and_drop_path(method):
    ref = _trainer(method)
    chunked = _trainer(method, micro=2)
    assert any(m.p > 0 for m in ref.model.modules() if isinstance(m, torch.nn.Dropout)) or method == "full-ft"
    assert any(layer.drop_path.active for layer in ref.model.layers)
    px, ids, mask = _inputs(ref)
    torch.manual_seed(123)
    want = _one_graph_reference(ref, px, ids, mask, GROUPS, [slice(i, i + 2) for i in range(0, 8, 2)])
    state_after_ref = torch.get_rng_state()
    torch.manual_seed(123)
    got = chunked._forward_backward(px, ids, mask, GROUPS)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    _assert_same_grads(_grads(chunked), _grads(ref))
    assert torch.equal(torch.get_rng_state(), state_after_ref)  # the next step draws what it would have drawn


@pytest.mark.parametrize("method", ["mwa", "full-ft"])
def test_without_random_layers_the_split_batch_equals_the_unsplit_one_pass(method):
    """No dropout or drop path: the four-chunk step and the ordinary one-pass step of the whole batch agree; the
    old accumulation (each chunk's loss over its own 2 pairs) gave a smaller loss and other gradients."""
    whole = _trainer(method, drop_path=0.0, options={"dropout": 0.0} if method == "mwa" else None)
    chunked = _trainer(method, micro=2, drop_path=0.0, options={"dropout": 0.0} if method == "mwa" else None)
    px, ids, mask = _inputs(whole)
    want = whole._forward_backward(px, ids, mask, GROUPS)
    got = chunked._forward_backward(px, ids, mask, GROUPS)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    _assert_same_grads(_grads(chunked), _grads(whole))
    with torch.no_grad():
        img, txt = whole._encode_pair(px, ids, mask)
        per_chunk = sum(float(model_loss(whole.model, img[i:i + 2], txt[i:i + 2], GROUPS[i:i + 2])) / 4
                        for i in range(0, 8, 2))
        full = float(model_loss(whole.model, img, txt, GROUPS))
    assert abs(float(got) - full) < 1e-5 and abs(per_chunk - full) > 0.1  # fewer negatives: the old loss was lower


def test_a_step_with_micro_batches_moves_the_weights_as_the_unsplit_step():
    whole = _trainer("mwa", drop_path=0.0, options={"dropout": 0.0})
    chunked = _trainer("mwa", micro=3, drop_path=0.0, options={"dropout": 0.0})  # uneven chunks: 3 + 3 + 2
    for seed in (1, 2):
        batch = whole.random_batch(8, seed=seed)
        batch["group"] = GROUPS
        torch.testing.assert_close(chunked.step(batch), whole.step(batch), atol=1e-6, rtol=1e-6)
    got = dict(chunked.applied.trainable_named_parameters())
    for name, p in whole.applied.trainable_named_parameters():
        torch.testing.assert_close(got[name], p, atol=1e-6, rtol=1e-5, msg=name)


def test_random_draws_replay_the_same_masks_and_leave_the_generator_where_it_was():
    torch.manual_seed(5)
    draws = RandomDraws(torch.device("cpu"))
    first = torch.nn.functional.dropout(torch.ones(64), 0.5)
    after = torch.get_rng_state()
    with draws.replay():
        again = torch.nn.functional.dropout(torch.ones(64), 0.5)
    assert torch.equal(first, again)
    assert torch.equal(torch.get_rng_state(), after)


def test_out_of_memory_back_off_trains_the_whole_batch_loss():
    """The back-off path (driven on the CPU: the encoder raises a CUDA out-of-memory error on its first call)
    halves the micro-batch and trains with GradCache: same loss and gradients as the unsplit batch."""
    whole = _trainer("mwa", drop_path=0.0, options={"dropout": 0.0})
    backed = _trainer("mwa", drop_path=0.0, options={"dropout": 0.0})
    said = []
    backed.on_message = said.append
    backed.oom_back_off = True  # CPU: back-off is off by default (a CPU out-of-memory is a real error)
    real, calls = backed._encode_image, []

    def encode_image(px):
        calls.append(px.shape[0])
        if len(calls) == 1:
            raise OOM_ERRORS[0]("CUDA out of memory (simulated)")
        return real(px)

    backed._encode_image = encode_image
    px, ids, mask = _inputs(whole)
    want = whole._forward_backward(px, ids, mask, GROUPS)
    batch = whole.random_batch(8, seed=1)
    batch["group"] = GROUPS
    grads_seen = {}
    step = backed.optimizer.step

    def record_then_step(*a, **k):  # the gradients the optimizer receives
        grads_seen.update(_grads(backed))
        return step(*a, **k)

    backed.optimizer.step = record_then_step
    got = backed.step(batch)
    assert backed.micro_batch == 4 and calls == [8, 4, 4, 4, 4]  # OOM at 8; then 2 chunks, each run twice
    assert len(said) == 1 and "micro-batch halved to 4" in said[0] and "effective batch stays 8" in said[0]
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    _assert_same_grads(grads_seen, _grads(whole))


def test_back_off_is_for_cuda_in_one_process_by_default():
    trainer = _trainer("mwa")
    assert trainer.oom_back_off is None and not trainer._can_back_off()
    trainer.oom_back_off = True
    assert trainer._can_back_off()


class RecordingGraphs:
    """A stand-in for StepGraphs on the CPU: runs the step it is handed (as its eager warm-up steps do), records
    the batch sizes, and can fail the first one with an out-of-memory error."""

    def __init__(self, oom_first: bool = False):
        self.batches: list[int] = []
        self.oom_first = oom_first
        self.disabled_reason: str | None = None

    @property
    def active(self) -> bool:
        return self.disabled_reason is None

    def run(self, step, *tensors):
        self.batches.append(tensors[0].shape[0])
        if self.oom_first and len(self.batches) == 1:
            raise OOM_ERRORS[0]("CUDA out of memory (simulated)")
        return step(*tensors)

    def disable(self, reason: str) -> None:
        self.disabled_reason = reason


@pytest.mark.parametrize("micro, graphed", [(None, [8, 8]), (8, [8, 8]), (4, [])])
def test_a_step_graph_takes_unsplit_batches_only(micro, graphed):
    """GradCache's chunks replay host-side generator states: a batch split into micro-batches runs eagerly."""
    trainer = _trainer("mwa", micro=micro)
    trainer._graphs = graphs = RecordingGraphs()
    for seed in (1, 2):
        loss = trainer.step(trainer.random_batch(8, seed=seed))
        assert torch.isfinite(loss)
    assert graphs.batches == graphed and trainer.step_count == 2


def test_out_of_memory_in_a_graph_step_turns_graphs_off_and_the_back_off_trains_with_grad_cache():
    trainer = _trainer("mwa", drop_path=0.0, options={"dropout": 0.0})
    trainer.oom_back_off = True
    trainer._graphs = graphs = RecordingGraphs(oom_first=True)
    real, calls = trainer._encode_image, []

    def encode_image(px):  # the eager retry of the whole batch runs out of memory too
        calls.append(px.shape[0])
        if len(calls) == 1:
            raise OOM_ERRORS[0]("CUDA out of memory (simulated)")
        return real(px)

    trainer._encode_image = encode_image
    trainer.step(trainer.random_batch(8, seed=1))
    trainer.step(trainer.random_batch(8, seed=2))
    assert graphs.batches == [8] and "out of memory" in graphs.disabled_reason
    assert trainer.micro_batch == 4 and calls == [8, 4, 4, 4, 4, 4, 4, 4, 4]  # two GradCache steps of 2 chunks
