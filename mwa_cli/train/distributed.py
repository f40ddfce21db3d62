"""Multi-GPU (and multi-process CPU) training on PyTorch's own engine: torchrun + DistributedDataParallel.

* `init_from_env(device)`: reads torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT),
  starts the default process group (nccl on CUDA, gloo on CPU) and a second gloo group for control messages
  (stop/continue flags, evaluation results, long waits) that never touches the GPU stream. World size 1 (or no
  torchrun variables): nothing is started and every helper is a cheap no-op, so single-device code paths stay
  exactly as they were.
* Data: the global batch of step s is the same as in a single process (`TrainBatches` is addressed by the global
  step); rank r of W takes rows r, r+W, r+2W, ... (`shard_slice`). With micro-batches of m/W per rank, every
  micro-batch of the W ranks together is exactly the single process's micro-batch of m.
* Loss: each rank gathers all ranks' image and text embeddings *with gradients* (`all_gather_with_grad`, the
  autograd-aware `torch.distributed.nn.functional.all_gather`, whose backward is a reduce-scatter) and computes
  the contrastive loss of its own rows against every column of the global batch, labels offset by rank·b
  (open_clip `local_loss=True, gather_with_grad=True`; BEiT-3). Mean over ranks = the single-process loss, and DDP's
  gradient averaging then gives exactly the single-process gradient (see `global_contrastive_loss`).
* DDP: the model's entry points are `encode_image`/`encode_text`, not `forward`, so DDP wraps a small
  `DualEncoder` whose forward runs both encoders (and returns the logit scale): DDP's reducer hooks see the one
  forward per micro-batch and average every trainable gradient once per optimizer step (`no_sync` on the other
  micro-batches). Frozen parameters (requires_grad False, including the frozen prefix run under no_grad) are not
  registered by DDP; trainable parameters that a method never uses (e.g. the vision `mask_token` under full
  fine-tuning) are found once by a probe and ignored, so `find_unused_parameters` (a graph walk every step) stays off.
* `mwa train --devices N` starts the ranks through `mwa_cli.train.launcher` (same variables as torchrun); rank 0
  reports its result through a small file so the launcher exits with rank 0's code.
"""

from __future__ import annotations

import atexit
import datetime
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from mwa_cli.errors import ConfigError
from mwa_cli.similarity import similarity
from mwa_cli.train.loss import MAX_LOGIT_SCALE
from mwa_cli.train.run_dir import RunDir

ENV_RESULT = "MWA_DIST_RESULT"  # file where rank 0 writes {"exit_code": ...} for `launch`
ENV_T0 = "MWA_DIST_T0"  # wall-clock start of the launching process (the budget counts from there)
ENV_COMMAND = "MWA_DIST_COMMAND"  # the command line the user typed (recorded in config.json)
RESULT_DIR_PREFIX = "mwa-dist-"  # the launcher's private temporary folder (holds ENV_RESULT's file)
LONG_WAIT = datetime.timedelta(hours=12)  # control group: ranks wait there while rank 0 evaluates / saves
# Training collectives (ranks in lockstep): a peer silent this long is stuck. On one machine the launcher ends a
# failed run within seconds; this bounds the wait under an external torchrun too (gloo's own default is 30 min).
STEP_TIMEOUT = datetime.timedelta(minutes=10)


# ============================================================================ context
@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    ctl: Any = None  # gloo process group for control messages

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ----------------------------------------------------------------- control messages (gloo, CPU)
    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier(group=self.ctl)

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """Rank `src`'s `obj` on every rank (pickled through the gloo control group; waits as long as needed)."""
        if not self.enabled:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=src, group=self.ctl)
        return box[0]

    def agree(self, signum: int | None, main_flags: tuple = ()) -> tuple[int | None, tuple]:
        """One decision for every rank: the signal any rank received (largest number), and rank 0's `main_flags`
        (booleans: budget stop, time-based checkpoint...). One tiny CPU all-reduce, no GPU sync."""
        if not self.enabled:
            return signum, tuple(main_flags)
        t = torch.zeros(1 + len(main_flags), dtype=torch.float64)
        t[0] = float(signum or 0)
        if self.is_main:
            for i, v in enumerate(main_flags):
                t[1 + i] = float(bool(v))
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX, group=self.ctl)
        sig = int(t[0].item()) or None
        return sig, tuple(bool(v) for v in t[1:].tolist())

    def min_int(self, value: int) -> int:
        if not self.enabled:
            return int(value)
        t = torch.tensor([int(value)], dtype=torch.int64)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN, group=self.ctl)
        return int(t.item())

    # ----------------------------------------------------------------- device tensors (default group)
    def mean(self, t: torch.Tensor) -> torch.Tensor:
        """Mean of a device tensor over ranks (the loss shown is the global batch's loss)."""
        if not self.enabled:
            return t
        t = t.detach().clone()
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
        return t / self.world_size

    def shard_slice(self) -> slice:
        return shard_slice(self.rank, self.world_size)


_CTX = DistContext()


def get() -> DistContext:
    return _CTX


def is_main() -> bool:
    return _CTX.is_main


def env_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def under_torchrun() -> bool:
    """True in a process started by torchrun / the elastic launcher (RANK and WORLD_SIZE set)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def init_from_env(device: torch.device) -> DistContext:
    """Start the process groups from torchrun's variables; world size 1 → nothing (returns the no-op context).

    On CUDA each process uses GPU LOCAL_RANK (of those visible), backend nccl; on CPU backend gloo.
    Idempotent: a second call returns the running context.
    """
    global _CTX
    if _CTX.enabled and torch.distributed.is_initialized():
        return _CTX
    world = env_world_size()
    if world <= 1 or not under_torchrun():
        _CTX = DistContext(device=torch.device(device))
        return _CTX
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(device)
    if device.type == "cuda":
        n = torch.cuda.device_count()
        if local_rank >= n:
            raise ConfigError(f"process {rank} has local rank {local_rank} but only {n} GPU(s) are visible",
                              hint="start at most one process per GPU (--nproc-per-node ≤ the GPU count)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    kwargs: dict = {"backend": backend, "timeout": STEP_TIMEOUT}
    if backend == "nccl":
        kwargs["device_id"] = device  # eager NCCL init, bound to this GPU
    try:
        torch.distributed.init_process_group(**kwargs)
    except TypeError:  # older torch without device_id
        kwargs.pop("device_id", None)
        torch.distributed.init_process_group(**kwargs)
    ctl = torch.distributed.new_group(backend="gloo", timeout=LONG_WAIT)
    _CTX = DistContext(rank=rank, world_size=world, local_rank=local_rank, backend=backend, device=device, ctl=ctl)
    atexit.register(teardown)
    return _CTX


def teardown() -> None:
    """Destroy the process groups (safe to call twice, and in a single process)."""
    global _CTX
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        try:
            torch.distributed.destroy_process_group()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass
    _CTX = DistContext(device=_CTX.device)


def reseed_rank(seed: int, step: int) -> None:
    """Ranks > 0 draw their own dropout / drop-path masks, seeded before every step from (seed, rank, step): a
    run is reproducible for a given world size, and a resumed run draws what the uninterrupted one drew (their RNG
    states are not in the checkpoint). Rank 0 keeps the single-process RNG stream (restored on resume)."""
    if _CTX.enabled and not _CTX.is_main:
        torch.manual_seed((int(seed) * 1_000_003 + _CTX.rank * 7_919 + int(step) * 104_729 + 17) % (2**63 - 1))


# ============================================================================ data
def shard_slice(rank: int, world: int) -> slice:
    """Rank-strided share of a global batch: rows rank, rank+world, ... (all ranks together: every row once)."""
    return slice(int(rank), None, int(world))


def shard_batch(batch: dict, rank: int, world: int) -> dict:
    """The rank's rows of every batched tensor of a global batch dict (non-tensors and 0-d tensors kept)."""
    if world <= 1:
        return batch
    sl = shard_slice(rank, world)
    return {k: (v[sl] if isinstance(v, torch.Tensor) and v.dim() > 0 else v) for k, v in batch.items()}


def check_batch_split(batch_size: int, world: int) -> None:
    if world > 1 and batch_size % world:
        raise ConfigError(f"the batch of {batch_size} cannot be split evenly over {world} devices",
                          hint=f"use a --batch-size that is a multiple of {world} (it is the global batch)")


# ============================================================================ loss with global negatives
def all_gather_with_grad(t: torch.Tensor) -> torch.Tensor:
    """Concatenation of every rank's `t` (same shape on each) along dim 0, differentiable: the gradient of each
    rank's slice is the sum of the gradients all ranks computed for it (reduce-scatter)."""
    if not _CTX.enabled:
        return t
    return _GatherWithGrad.apply(t.contiguous())


class _GatherWithGrad(torch.autograd.Function):
    """all_gather forward; backward: the sum over ranks of the gathered tensor's gradient, this rank's rows (an
    all-reduce of a [G, D] embedding gradient: tiny, and available on every backend, gloo included)."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        parts = [torch.empty_like(t) for _ in range(_CTX.world_size)]
        torch.distributed.all_gather(parts, t)
        ctx.rows = (_CTX.rank * t.shape[0], (_CTX.rank + 1) * t.shape[0])
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        torch.distributed.all_reduce(grad, op=torch.distributed.ReduceOp.SUM)
        return grad[ctx.rows[0]:ctx.rows[1]]


def gather_groups(groups: torch.Tensor) -> torch.Tensor:
    """Every rank's pair group ids (same length on each), concatenated in rank order; no gradient."""
    if not _CTX.enabled:
        return groups
    parts = [torch.empty_like(groups) for _ in range(_CTX.world_size)]
    torch.distributed.all_gather(parts, groups.contiguous())
    return torch.cat(parts, dim=0)


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
    if not _CTX.enabled:
        from mwa_cli.train.loss import contrastive_loss

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
        from mwa_cli.train.loss import positive_mask, soft_cross_entropy

        g = groups.to(img.device)
        pos = positive_mask(g, gather_groups(g))
        return 0.5 * (soft_cross_entropy(logits_i, pos) + soft_cross_entropy(logits_t, pos))
    labels = torch.arange(b, device=img.device) + _CTX.rank * b
    return 0.5 * (F.cross_entropy(logits_i, labels) + F.cross_entropy(logits_t, labels))


def global_sigmoid_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor,
                        logit_bias: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
    """SigLIP's loss over the global batch, this rank's share: its image rows against every rank's texts,
    `-Σ log σ(z·(s·I_r·T_allᵀ + b)) / b_r` (z = +1 on the rank's diagonal block offset by rank·b, or wherever the
    group ids match when `groups` is given). Mean over ranks = the single-process loss `-Σ / B`."""
    if not _CTX.enabled:
        from mwa_cli.train.loss import sigmoid_loss

        return sigmoid_loss(image_emb, text_emb, logit_scale, logit_bias, groups)
    img = image_emb.float()
    all_txt = all_gather_with_grad(text_emb.float())
    logits = similarity(img, all_txt) * logit_scale.float().exp() + logit_bias.float()
    b = img.shape[0]
    if groups is not None:
        from mwa_cli.train.loss import positive_mask

        g = groups.to(logits.device)
        z = 2 * positive_mask(g, gather_groups(g)) - 1
    else:
        z = -torch.ones_like(logits)
        idx = torch.arange(b, device=logits.device)
        z[idx, idx + _CTX.rank * b] = 1.0
    return -F.logsigmoid(z * logits).sum() / b


def global_model_loss(model, image_emb: torch.Tensor, text_emb: torch.Tensor,
                      groups: torch.Tensor | None = None) -> torch.Tensor:
    """`loss.model_loss` with global negatives: this rank's share (mean over ranks = the single-process loss)."""
    if getattr(model, "loss_kind", "softmax") == "sigmoid":
        return global_sigmoid_loss(image_emb, text_emb, model.logit_scale, model.logit_bias, groups)
    return global_contrastive_loss(image_emb, text_emb, model.logit_scale, groups)


# ============================================================================ DDP
class DualEncoder(torch.nn.Module):
    """forward(pixels, ids, mask) → (image_emb, text_emb): one DDP forward per micro-batch."""

    def __init__(self, model: torch.nn.Module, encode_image: Callable | None = None,
                 encode_text: Callable | None = None):
        super().__init__()
        self.model = model
        self._enc_img = encode_image or model.encode_image
        self._enc_txt = encode_text or model.encode_text

    def forward(self, pixels: torch.Tensor, input_ids: torch.Tensor, padding_mask: torch.Tensor):
        return self._enc_img(pixels), self._enc_txt(input_ids, padding_mask)


def unused_trainables(model: torch.nn.Module, encode_image: Callable, encode_text: Callable, device: torch.device
                      ) -> list[str]:
    """Names of trainable parameters that get no gradient from a (2-sample) image+text forward/backward.

    Runs under a forked RNG and leaves no gradient behind, so training is not changed by the probe."""
    from mwa_cli.train.loss import model_loss

    cfg = model.config
    s = int(cfg.img_size)
    L = min(8, int(getattr(cfg, "text_len", 8)))
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        px = torch.zeros(2, 3, s, s, device=device)
        ids = torch.full((2, L), 5, dtype=torch.long, device=device)
        mask = torch.zeros(2, L, dtype=torch.long, device=device)
        loss = model_loss(model, encode_image(px), encode_text(ids, mask))
        loss.backward()
    names = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    for p in model.parameters():
        p.grad = None
    return names


def wrap_ddp(model: torch.nn.Module, encode_image: Callable, encode_text: Callable, device: torch.device):
    """DDP over a `DualEncoder` of `model`: only trainable parameters are registered and averaged."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    unused = unused_trainables(model, encode_image, encode_text, device)
    find_unused = False
    wrapper = DualEncoder(model, encode_image, encode_text)
    if unused:
        names = [f"model.{n}" for n in unused]
        if hasattr(DDP, "_set_params_and_buffers_to_ignore_for_model"):
            DDP._set_params_and_buffers_to_ignore_for_model(wrapper, names)
        else:  # pragma: no cover - older torch
            find_unused = True
    ids = [device.index] if device.type == "cuda" else None
    import inspect

    # buffers are built identically on every rank and never change: no per-forward buffer broadcast
    params = inspect.signature(DDP.__init__).parameters
    buffers = {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
    return DDP(wrapper, device_ids=ids, output_device=device.index if ids else None,
               find_unused_parameters=find_unused, gradient_as_bucket_view=True, **buffers)


# ============================================================================ run directory on ranks > 0
class NullRunDir(RunDir):
    """The run folder as seen by ranks > 0: readable, but every write is skipped (rank 0 alone writes)."""

    def write_config(self, config: dict) -> None:
        return None

    def append_metrics(self, row: dict) -> None:
        return None

    def truncate_metrics(self, after_step: int) -> None:
        return None

    def write_timing(self, timing: dict) -> None:
        return None

    def write_eval(self, eval_dict: dict, topk: dict | None = None, ranks=None) -> None:
        return None


def on_main(fn: Callable[[], Any]) -> Any:
    """Run `fn` on rank 0 only and hand its result (or its MwaError, raised again) to every rank."""
    from mwa_cli.errors import MwaError

    if not _CTX.enabled:
        return fn()
    payload: Any = None
    if _CTX.is_main:
        try:
            payload = ("ok", fn())
        except MwaError as exc:
            payload = ("error", exc)
    payload = _CTX.broadcast_object(payload)
    if payload[0] == "error":
        raise payload[1]
    return payload[1]


def write_result(result: dict) -> None:
    """Rank 0 under mwa's launcher: leave the run's result for the launching process. Only a process started by
    the launcher does (a stray MWA_DIST_RESULT in a plain `mwa train` changes nothing), and only into the
    launcher's own private temporary folder."""
    path = os.environ.get(ENV_RESULT)
    if path and _CTX.is_main and launched_by_mwa() and Path(path).parent.name.startswith(RESULT_DIR_PREFIX):
        tmp = Path(path).with_suffix(".tmp")
        tmp.write_text(json.dumps(result, default=str), encoding="utf-8")
        os.replace(tmp, path)


def launched_by_mwa() -> bool:
    return bool(os.environ.get(ENV_RESULT)) and under_torchrun()


def start_time_monotonic() -> float | None:
    """The launching process's start, on this process's monotonic clock (None when not launched by `launch`)."""
    t0 = os.environ.get(ENV_T0)
    if not t0:
        return None
    try:
        return time.monotonic() - max(0.0, time.time() - float(t0))
    except ValueError:
        return None


def user_command() -> str | None:
    """The command line the user typed, passed on by mwa's launcher (ignored in any other process)."""
    return (os.environ.get(ENV_COMMAND) or None) if launched_by_mwa() else None
