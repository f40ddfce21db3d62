"""The trainer: one optimizer step of contrastive training, and how to build one.

* `Trainer`: one optimizer step (`Trainer.step(batch)`), with mixed precision, gradient accumulation
  (micro-batches) that keeps every negative of the batch, CUDA-OOM back-off, fused AdamW on CUDA, frozen prefix
  under no_grad. The hot path does no host sync: the loss stays on the device; the training loop reads it only at
  logging intervals.
* `build_trainer(...)`: a Trainer on a freshly built backbone + method, no data needed (the full fine-tuning
  estimate, benchmarks).

The batch-size probe (`--batch-size auto`) is train/batch_probe.py; the benchmarks' step timing bench/benchlib.py.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from typing import Callable, Iterator

import numpy as np
import torch

from mwa_cli.errors import EXIT_OOM, MwaError
from mwa_cli.runtime import amp_dtype, resolve_device, resolve_precision
from mwa_cli.train import checkpoint as ckpt_mod
from mwa_cli.train.data import augment_batch
from mwa_cli.train.loss import LOCAL, Gather, loss_parameters, model_loss
from mwa_cli.train.optim import build_optimizer, make_capturable
from mwa_cli.train.schedule import WarmupCosine

OOM_ERRORS: tuple[type[BaseException], ...] = tuple(
    {getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError), torch.cuda.OutOfMemoryError})


class Trainer:
    """Owns the model, optimizer, schedule and precision; `step(batch)` does one optimizer step.

    A batch is a dict: `images` uint8 [B,S,S,3] (+ `boxes` [B,4], `flip` [B] for augmentation) or `pixels`
    float [B,3,H,W] already normalised; `input_ids`, `padding_mask` [B,L]; optional `group` [B] positive-group ids
    (pairs with equal ids are positives of each other: train/positives.py).

    `micro_batch` < B splits the batch into chunks and still trains the whole batch's loss, as GradCache does:
    the embeddings are computed chunk by chunk without autograd, the loss over all of them (every pair a negative
    of every other, the positive groups, the learnable temperature, other ranks' embeddings under DDP) gives the
    gradients of the embeddings, then each chunk runs again with autograd, its random draws (dropout, drop path)
    replayed, and back-propagates its share. Loss and gradients equal the unsplit batch's; the price is a second
    forward of each chunk. An unsplit batch takes one pass. `oom_back_off` (None: CUDA in a single process) halves
    the micro-batch when a step runs out of memory. `cuda_graph` replays each unsplit step as one CUDA graph
    (train/step_graph.py); a batch split into micro-batches runs eagerly.
    """

    def __init__(self, model, applied, *, device: torch.device | str = "cpu", precision: str = "fp32",
                 lr: float = 2e-4, min_lr: float = 1e-6, warmup_frac: float = 0.1, weight_decay: float = 0.05,
                 layer_decay: float = 0.65, micro_batch: int | None = None, compile: bool | str = False,
                 on_message: Callable[[str], None] | None = None, distributed: bool = False,
                 cuda_graph: bool = False, oom_back_off: bool | None = None):
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.model.train()
        self.applied = applied
        self.precision = precision
        self.dtype = amp_dtype(precision)
        self.image_size = int(model.config.img_size)
        self.micro_batch = micro_batch
        self.oom_back_off = oom_back_off
        self.on_message = on_message or (lambda _msg: None)
        groups = applied.param_groups(lr, weight_decay, layer_decay)
        model.set_frozen_prefix(int(applied.lowest_trainable_layer))
        graphs = cuda_graph and self.device.type == "cuda" and precision != "fp16"  # GradScaler syncs the host
        self.optimizer = build_optimizer(groups, self.device, capturable=graphs)
        self.schedule = WarmupCosine(lr, min_lr, warmup_frac)
        self.schedule.fit(100_000)
        self.scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
        self.step_count = 0
        self.last_lr = 0.0
        self._encode_image = model.encode_image
        self._encode_text = model.encode_text
        self._cuda_graphs = False
        self.compiled: bool | str = False
        self.enable_compile(compile)
        self.feature_start = 0  # > 0: batches carry cached hidden states entering this layer (feature_cache.py)
        self._ddp = None  # DDP over both encoders when started by torchrun (mwa_cli/train/dist/)
        self._gather: Gather = LOCAL  # where the loss finds its negatives: this batch, or every rank's under DDP
        if distributed and self.optimizer is not None:
            from mwa_cli.train.dist.context import get as dist_context
            from mwa_cli.train.dist.ddp import wrap_ddp
            from mwa_cli.train.dist.gather import rank_gather

            if dist_context().enabled:
                self._ddp = wrap_ddp(model, self._encode_image, self._encode_text, self.device)
                self._gather = rank_gather()
        self._graphs = None  # train/step_graph.py: the whole step as one CUDA graph per batch shape
        if graphs and self._ddp is None and self.optimizer is not None:
            from mwa_cli.train.step_graph import StepGraphs

            self._graphs = StepGraphs(self.device, self._clear_grads, on_message=self.on_message)
        if self.dtype is not None and hasattr(model, "store_frozen_in"):  # autocast casts them anyway: keep them so
            model.store_frozen_in(self.dtype)  # (after DDP's fp32 probe; every later forward runs under autocast)

    def enable_compile(self, compile: bool | str) -> None:
        """torch.compile the encoders: True, or a torch.compile mode ("reduce-overhead": CUDA graphs of each layer).
        BEiT-3 compiles per layer (one compiled layer for every depth); other backbones their encode functions."""
        if not compile:
            return
        self.compiled = compile
        self._cuda_graphs = compile == "reduce-overhead"
        modes = {"mode": compile} if isinstance(compile, str) else {}
        if hasattr(self.model, "compile_layers"):
            self.model.compile_layers(**modes)
        else:
            self._encode_image = torch.compile(self.model.encode_image, **modes)
            self._encode_text = torch.compile(self.model.encode_text, **modes)

    def step_graph_record(self) -> dict | None:
        """The step graphs of this trainer, for timing.json: None when off, else shapes captured, replays and why
        they were turned off (null while on)."""
        if self._graphs is None:
            return None
        return {"graphs": len(self._graphs.graphs), "replays": self._graphs.replays,
                "disabled": self._graphs.disabled_reason}

    @property
    def trains(self) -> bool:
        return self.optimizer is not None

    def _autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        # a graph replays its casts; a weight cast cached outside it would go stale inside
        return torch.autocast(device_type=self.device.type, dtype=self.dtype, cache_enabled=self._graphs is None)

    def use_feature_cache(self, start: int) -> None:
        """Train from cached hidden states entering layer `start` (batches from FeatureCache.inputs)."""
        self.feature_start = int(start)
        if self._ddp is not None:
            self._ddp.module.from_hidden(start)

    def pixels(self, batch: dict) -> torch.Tensor:
        """The image input of a batch: pixels (augmented on the device), or cached hidden states."""
        if "image_hidden" in batch:
            return batch["image_hidden"].to(self.device, non_blocking=True)
        if "pixels" in batch:
            return batch["pixels"].to(self.device, non_blocking=True)
        images = batch["images"].to(self.device, non_blocking=True)
        return augment_batch(images, batch["boxes"], batch["flip"], self.image_size)

    def _forward_backward(self, px: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor,
                          groups: torch.Tensor | None = None) -> torch.Tensor:
        """Gradients of the whole batch's loss (accumulated into `.grad`); returns the loss, detached."""
        b = px.shape[0]
        m = min(self.micro_batch or b, b)
        if m >= b:
            return self._one_pass(px, ids, mask, groups)
        return self._chunked_passes(px, ids, mask, groups, [slice(i, min(i + m, b)) for i in range(0, b, m)])

    def _one_pass(self, px: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor,
                  groups: torch.Tensor | None) -> torch.Tensor:
        with self._autocast():
            img, txt = self._encode_pair(px, ids, mask)
        loss = self._pair_loss(img, txt, groups)  # softmax (BEiT-3, CLIP) or sigmoid (SigLIP); global negatives in DDP
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        return loss.detach()

    def _chunked_passes(self, px: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, groups: torch.Tensor | None,
                        chunks: list[slice]) -> torch.Tensor:
        """GradCache: embeddings without a graph, the whole batch's loss on them, then each chunk again with
        autograd, back-propagating its rows of the embedding gradients (see the class docstring)."""
        draws, images, texts = [], [], []
        with torch.no_grad():
            for c in chunks:
                draws.append(RandomDraws(self.device))
                self._new_graph_step()
                with self._autocast():
                    img, txt = self._encode_pair(px[c], ids[c], mask[c], ddp=False)
                images.append(img)
                texts.append(txt)
        img = torch.cat(images).requires_grad_()
        txt = torch.cat(texts).requires_grad_()
        loss = self._pair_loss(img, txt, groups)
        heads = [p for p in loss_parameters(self.model) if p.requires_grad]  # the temperature (and SigLIP's bias)
        scaled = self.scaler.scale(loss) if self.scaler is not None else loss
        g_img, g_txt, *g_heads = torch.autograd.grad(scaled, [img, txt, *heads])
        for k, c in enumerate(chunks):
            last = k == len(chunks) - 1
            self._new_graph_step()
            with draws[k].replay(), self._autocast(), self._ddp_sync(last=last):
                img_c, txt_c = self._encode_pair(px[c], ids[c], mask[c])
            # the loss's own parameters join the last backward: under DDP it is the one that averages gradients
            roots, grads = [img_c, txt_c, *(heads if last else [])], [g_img[c], g_txt[c], *(g_heads if last else [])]
            torch.autograd.backward(roots, grads)
        return loss.detach()

    def _new_graph_step(self) -> None:
        """CUDA graphs: each chunk's forward is a new iteration (its outputs may overwrite the last chunk's)."""
        if self._cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()

    def _ddp_sync(self, last: bool):
        """DDP averages gradients once per optimizer step: no_sync on every micro-batch but the last."""
        if self._ddp is None or last:
            return contextlib.nullcontext()
        return self._ddp.no_sync()

    def _encode_pair(self, px: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, *, ddp: bool = True):
        """(image, text) embeddings; `ddp=False`: past the DDP wrapper (forwards without autograd)."""
        if self._ddp is not None:
            return self._ddp(px, ids, mask) if ddp else self._ddp.module(px, ids, mask)
        if self.feature_start:  # px and ids are the cached hidden states of images and captions
            return (self.model.encode_image_hidden(px, self.feature_start),
                    self.model.encode_text_hidden(ids, mask, self.feature_start))
        return self._encode_image(px), self._encode_text(ids, mask)

    def _pair_loss(self, img: torch.Tensor, txt: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        return model_loss(self.model, img, txt, groups, self._gather)

    def step(self, batch: dict) -> torch.Tensor:
        """One optimizer step on `batch`; returns the loss as a 0-d device tensor (no host sync)."""
        if self.optimizer is None:
            raise MwaError("this method has no trainable parameters: nothing to train")
        if self._cuda_graphs:  # a new iteration: CUDA-graph outputs of the last one may be overwritten
            torch.compiler.cudagraph_mark_step_begin()
        px, ids, mask, groups = self._inputs(batch)
        lr = self.schedule.apply(self.optimizer, self.step_count)
        loss = self._graph_step(px, ids, mask, groups) if self._graph_applies(px.shape[0]) else None
        if loss is None:
            loss = self._eager_step(px, ids, mask, groups)
        self.step_count += 1
        self.last_lr = lr
        return loss

    def _inputs(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(pixels or image states, ids or text states, padding mask, positive groups) on the device."""
        px = self.pixels(batch)
        ids = batch["text_hidden" if "text_hidden" in batch else "input_ids"].to(self.device, non_blocking=True)
        mask = batch["padding_mask"].to(self.device, non_blocking=True)
        groups = batch["group"].to(self.device, non_blocking=True) if "group" in batch else None
        return px, ids, mask, groups

    def _graph_applies(self, batch: int) -> bool:
        """A step graph captures an unsplit batch only: GradCache's chunks replay host-side generator states and
        run eagerly."""
        return self._graphs is not None and self._graphs.active and min(self.micro_batch or batch, batch) >= batch

    def _graph_step(self, px, ids, mask, groups) -> torch.Tensor | None:
        """The step through StepGraphs; None when it ran out of memory (graphs off, the eager back-off retries)."""
        try:
            return self._graphs.run(self._update, px, ids, mask, groups)
        except OOM_ERRORS:
            if not self._can_back_off():
                raise
            self._clear_grads()
            self._graphs.disable("out of memory while warming up")
            return None

    def _update(self, px, ids, mask, groups) -> torch.Tensor:
        """Forward, backward and optimizer update of one batch (what a step graph captures)."""
        loss = self._forward_backward(px, ids, mask, groups)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss

    def _clear_grads(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def _eager_step(self, px, ids, mask, groups) -> torch.Tensor:
        """Forward and backward with the out-of-memory back-off, then the optimizer update."""
        loss = self._gradients(px, ids, mask, groups)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss

    def _gradients(self, px, ids, mask, groups) -> torch.Tensor:
        """The batch's gradients (the micro-batch halved on out-of-memory, see `_can_back_off`); returns the loss."""
        while True:
            oom = False
            try:
                return self._forward_backward(px, ids, mask, groups)
            except OOM_ERRORS:
                if not self._can_back_off():
                    raise
                oom = True
            if oom:  # outside the except block: its traceback holds the failed attempt's tensors
                self._halve_micro_batch(px.shape[0])

    def warm_compile(self, batch: dict, widths: list[int] = (), eval_batch: int = 0) -> float:
        """Compile before training, so no training step pays for it: forward and backward of `batch` at its text
        width and at each of `widths` (a second width makes the text length dynamic), then `eval_batch` random pairs
        encoded in evaluation mode. Weights, optimizer and random state are left as they were, gradients cleared.
        Returns the seconds it took."""
        t0 = time.perf_counter()
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            for width in [None, *widths]:
                self._gradients(*self._inputs(batch if width is None else at_text_width(batch, width)))
                self.optimizer.zero_grad(set_to_none=True)
            if eval_batch:
                probe = self.random_batch(eval_batch, augment=False, seed=2)
                self.model.eval()
                try:
                    with torch.inference_mode(), self._autocast():
                        self.model.encode_image(self.pixels(probe))
                        self.model.encode_text(probe["input_ids"].to(self.device), probe["padding_mask"].to(self.device))
                finally:
                    self.model.train()
        self.synchronize()
        return time.perf_counter() - t0

    def _can_back_off(self) -> bool:
        """`oom_back_off`, by default CUDA (a CPU out-of-memory is a real error) in a single process: under DDP
        one rank cannot change its micro-batch alone (the collectives would no longer match)."""
        if self.oom_back_off is not None:
            return self.oom_back_off
        return self.device.type == "cuda" and self._ddp is None

    def _halve_micro_batch(self, batch: int) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        current = min(self.micro_batch or batch, batch)
        if current <= 1:
            raise MwaError("CUDA out of memory even with a micro-batch of 1",
                           hint="use a smaller backbone, --precision bf16, or a GPU with more memory", exit_code=EXIT_OOM)
        self.micro_batch = max(1, current // 2)
        acc = math.ceil(batch / self.micro_batch)
        self.on_message(f"CUDA out of memory: micro-batch halved to {self.micro_batch}; the effective batch stays "
                        f"{batch} through {acc} gradient-accumulation steps")

    @contextlib.contextmanager
    def without_ddp(self) -> Iterator[None]:
        """Forwards and backwards of this process alone while inside (no collectives, gradients not averaged):
        each rank of a distributed run probes its own GPU's memory (train/batch_probe.py)."""
        ddp, self._ddp = self._ddp, None
        try:
            yield
        finally:
            self._ddp = ddp

    # ----------------------------------------------------------------- random inputs
    def random_batch(self, batch_size: int, *, text_len: int | None = None, seed: int = 0,
                     augment: bool = True) -> dict:
        """A batch of random data in the trainer's input format (uint8 images from a private generator): what
        `warm_compile` and the batch-size probe run, and the benchmarks' inputs."""
        g = torch.Generator().manual_seed(seed)
        s = self.image_size
        text_len = int(text_len or self.model.config.text_len)
        vocab = int(self.model.config.vocab_size)
        ids = torch.randint(4, vocab, (batch_size, text_len), generator=g)
        lengths = torch.randint(text_len // 4, text_len + 1, (batch_size,), generator=g)
        mask = (torch.arange(text_len)[None, :] >= lengths[:, None]).long()
        ids = ids.masked_fill(mask.bool(), 1)
        batch = {"images": torch.randint(0, 256, (batch_size, s, s, 3), dtype=torch.uint8, generator=g),
                 "input_ids": ids, "padding_mask": mask,
                 "boxes": torch.tensor([[0.1, 0.1, 0.8, 0.8]]).repeat(batch_size, 1),
                 "flip": torch.rand(batch_size, generator=g) < 0.5}
        if not augment:
            batch["boxes"] = torch.tensor([[0.0, 0.0, 1.0, 1.0]]).repeat(batch_size, 1)
        if self.device.type == "cuda":
            batch = {k: v.pin_memory() for k, v in batch.items()}
        return batch

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {
            "trainables": ckpt_mod.trainable_state(self.model),
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "step": self.step_count,
            "micro_batch": self.micro_batch,
        }

    def load_state_dict(self, state: dict) -> None:
        ckpt_mod.load_trainable_state(self.model, state["trainables"])
        if self.optimizer is not None and state.get("optimizer") is not None:
            self.optimizer.load_state_dict(state["optimizer"])
            if self._graphs is not None:  # a checkpoint of an eager run restores float rates and host step counts
                make_capturable(self.optimizer, self.device)
        self.schedule.load_state_dict(state["schedule"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step_count = int(state["step"])
        self.micro_batch = state.get("micro_batch")


def at_text_width(batch: dict, width: int) -> dict:
    """`batch` with its captions cut or padded to `width` tokens (padding: id 1 or zero states, masked)."""
    key = "text_hidden" if "text_hidden" in batch else "input_ids"
    extra = width - batch["padding_mask"].shape[1]
    text, mask = batch[key], batch["padding_mask"]
    if extra <= 0:
        return {**batch, key: text[:, :width], "padding_mask": mask[:, :width]}
    pad = (0, 0, 0, extra) if text.ndim == 3 else (0, extra)
    return {**batch, key: torch.nn.functional.pad(text, pad, value=0 if text.ndim == 3 else 1),
            "padding_mask": torch.nn.functional.pad(mask, (0, extra), value=1)}


class RandomDraws:
    """The CPU and CUDA generator states before a chunk's first forward: `replay()` makes its second forward draw
    the same dropout and drop-path masks, and leaves the generators where they were (as GradCache's RandContext)."""

    def __init__(self, device: torch.device):
        self.devices = [device] if device.type == "cuda" else []
        self.cpu = torch.get_rng_state()
        self.cuda = [torch.cuda.get_rng_state(d) for d in self.devices]  # host-side state: no device sync

    @contextlib.contextmanager
    def replay(self):
        with torch.random.fork_rng(devices=self.devices):
            torch.set_rng_state(self.cpu)
            for d, state in zip(self.devices, self.cuda):
                torch.cuda.set_rng_state(state, d)
            yield


def build_trainer(backbone: str | dict = "beit3-base", method: str = "mwa", *, method_options: dict | None = None,
                  weights: str | None = None, device: str = "auto", precision: str = "auto",
                  micro_batch: int | None = None, lr: float = 2e-4, layer_decay: float = 0.65,
                  weight_decay: float = 0.05, drop_path: float = 0.1, compile: bool | str = False,
                  total_steps: int = 1000, seed: int = 0, distributed: bool = False,
                  cuda_graph: bool = False) -> Trainer:
    """A Trainer on a fresh backbone + method, exactly as `mwa train` builds it (for benchmarks; no data).

    `distributed`: under torchrun (after `dist.context.init_from_env`), use this rank's device and wrap in DDP."""
    from mwa_cli.adapters.registry import apply_method
    from mwa_cli.models.presets import build_backbone

    dev = resolve_device(device)
    if distributed:
        from mwa_cli.train.dist.context import get as dist_context

        if dist_context().enabled:
            dev = dist_context().device
    prec = resolve_precision(precision, dev)
    seed_everything(seed)
    model, _info = build_backbone(backbone, weights, drop_path=drop_path, device=dev)
    applied = apply_method(model, method, method_options)
    cuda_setup(dev)
    trainer = Trainer(model, applied, device=dev, precision=prec, lr=lr, layer_decay=layer_decay,
                      weight_decay=weight_decay, micro_batch=micro_batch, compile=compile, distributed=distributed,
                      cuda_graph=cuda_graph)
    trainer.schedule.fit(total_steps)
    return trainer


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (a run's weights and data order follow from its seed)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def cuda_setup(device: torch.device) -> None:
    """TF32 matmuls on CUDA (the precision every run and benchmark trains with)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
