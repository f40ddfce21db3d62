"""The trainer behind `mwa train` and the GPU benchmark.

* `Trainer`: one optimizer step of contrastive training (`Trainer.step(batch)`), with mixed precision, gradient
  accumulation (micro-batches), CUDA-OOM back-off, fused AdamW on CUDA, frozen prefix under no_grad. The hot path
  does no host sync: the loss stays on the device; `train()` reads it only at logging intervals.
* `build_trainer(...)`: a Trainer on a freshly built backbone + method, no data needed (benchmarks).
* `train(config, progress=None) -> RunResult`: the whole run: data, budget planning, logging, evaluations,
  checkpoints, signals, artefacts.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import random
import shlex
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from mwa_cli import __version__
from mwa_cli.errors import ConfigError, DataError, MwaError
from mwa_cli.train import checkpoint as ckpt_mod
from mwa_cli.train.budget import BudgetPlanner
from mwa_cli.train.collapse import CollapseWatch
from mwa_cli.train.early_stop import BestKeeper
from mwa_cli.train.config import (TrainConfig, amp_dtype, config_from_run, resolve_device, resolve_precision)
from mwa_cli.train.data import (PairTable, TrainBatches, augment_batch, close_loader, flip_allowed_mask,
                                make_loader, open_cache_array)
from mwa_cli.train.loss import model_loss
from mwa_cli.train.positives import resolve_positives
from mwa_cli.train.optim import build_optimizer
from mwa_cli.train.run_dir import RunDir, base_config_record, default_run_name
from mwa_cli.train.schedule import WarmupCosine

EXIT_OK = 0
EXIT_NONFINITE = 3
EXIT_SIGINT = 130
EXIT_SIGTERM = 143
CPU_AUTO_BATCH = 32
GPU_DEFAULT_BATCH = 128
AUTO_BATCH_CAP = 256
MIN_STOP_FRACTION = 0.25  # early stopping never before this share of the planned steps

ProgressFn = Callable[[str, dict], None]

_OOM_ERRORS: tuple[type[BaseException], ...] = tuple(
    {getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError), torch.cuda.OutOfMemoryError})


class NonFiniteLoss(MwaError):
    exit_code = EXIT_NONFINITE


@dataclass
class RunResult:
    run_dir: Path
    status: str  # completed | interrupted | nonfinite
    exit_code: int
    steps: int
    total_steps: int
    message: str = ""
    resume_command: str | None = None
    eval: dict | None = None
    timing: dict = field(default_factory=dict)
    last_loss: float | None = None

    def to_dict(self) -> dict:
        return {"run_dir": str(self.run_dir), "status": self.status, "exit_code": self.exit_code,
                "steps": self.steps, "total_steps": self.total_steps, "message": self.message,
                "resume_command": self.resume_command, "eval": self.eval, "timing": self.timing,
                "last_loss": self.last_loss}


# ============================================================================ Trainer
class Trainer:
    """Owns the model, optimizer, schedule and precision; `step(batch)` does one optimizer step.

    A batch is a dict: `images` uint8 [B,S,S,3] (+ `boxes` [B,4], `flip` [B] for augmentation) or `pixels`
    float [B,3,H,W] already normalised; `input_ids`, `padding_mask` [B,L]; optional `group` [B] positive-group ids
    (pairs with equal ids are positives of each other: train/positives.py). `micro_batch` < B accumulates
    gradients over B/micro_batch chunks (each chunk's contrastive loss uses its own in-chunk negatives).
    """

    def __init__(self, model, applied, *, device: torch.device | str = "cpu", precision: str = "fp32",
                 lr: float = 2e-4, min_lr: float = 1e-6, warmup_frac: float = 0.1, weight_decay: float = 0.05,
                 layer_decay: float = 0.65, micro_batch: int | None = None, compile: bool | str = False,
                 on_message: Callable[[str], None] | None = None, distributed: bool = False):
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.model.train()
        self.applied = applied
        self.precision = precision
        self.dtype = amp_dtype(precision)
        self.image_size = int(model.config.img_size)
        self.micro_batch = micro_batch
        self.on_message = on_message or (lambda _msg: None)
        groups = applied.param_groups(lr, weight_decay, layer_decay)
        model.set_frozen_prefix(int(applied.lowest_trainable_layer))
        self.optimizer = build_optimizer(groups, self.device)
        self.schedule = WarmupCosine(lr, min_lr, warmup_frac)
        self.schedule.fit(100_000)
        self.scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
        self.step_count = 0
        self.last_lr = 0.0
        self._encode_image = model.encode_image
        self._encode_text = model.encode_text
        self._cuda_graphs = False
        self.enable_compile(compile)
        self.feature_start = 0  # > 0: batches carry cached hidden states entering this layer (feature_cache.py)
        self._ddp = None  # DDP over both encoders when started by torchrun (mwa_cli/train/distributed.py)
        if distributed and self.optimizer is not None:
            from mwa_cli.train import distributed as dist_mod

            if dist_mod.get().enabled:
                self._ddp = dist_mod.wrap_ddp(model, self._encode_image, self._encode_text, self.device)
        if self.dtype is not None and hasattr(model, "store_frozen_in"):  # autocast casts them anyway: keep them so
            model.store_frozen_in(self.dtype)  # (after DDP's fp32 probe; every later forward runs under autocast)

    def enable_compile(self, compile: bool | str) -> None:
        """torch.compile the encoders: True, or a torch.compile mode ("reduce-overhead": CUDA graphs of each layer).
        BEiT-3 compiles per layer (one compiled layer for every depth); other backbones their encode functions."""
        if not compile:
            return
        self._cuda_graphs = compile == "reduce-overhead"
        modes = {"mode": compile} if isinstance(compile, str) else {}
        if hasattr(self.model, "compile_layers"):
            self.model.compile_layers(**modes)
        else:
            self._encode_image = torch.compile(self.model.encode_image, **modes)
            self._encode_text = torch.compile(self.model.encode_text, **modes)

    @property
    def trains(self) -> bool:
        return self.optimizer is not None

    def _autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def use_feature_cache(self, start: int) -> None:
        """Train from cached hidden states entering layer `start` (batches from FeatureCache.inputs)."""
        if self._ddp is not None:
            from mwa_cli.train.feature_cache import several_devices_error

            raise several_devices_error()
        self.feature_start = int(start)

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
        b = px.shape[0]
        m = min(self.micro_batch or b, b)
        total = torch.zeros((), device=self.device)
        for i in range(0, b, m):
            j = min(i + m, b)
            with self._autocast(), self._ddp_sync(last=j >= b):
                img, txt = self._encode_pair(px[i:j], ids[i:j], mask[i:j])
            g = groups[i:j] if groups is not None else None  # positives within the micro-batch, like negatives
            loss = self._pair_loss(img, txt, g)  # softmax (BEiT-3, CLIP) or sigmoid (SigLIP); global negatives in DDP
            part = loss * ((j - i) / b)
            if self.scaler is not None:
                self.scaler.scale(part).backward()
            else:
                part.backward()
            total = total + part.detach()
        return total

    def _ddp_sync(self, last: bool):
        """DDP averages gradients once per optimizer step: no_sync on every micro-batch but the last."""
        if self._ddp is None or last:
            return contextlib.nullcontext()
        return self._ddp.no_sync()

    def _encode_pair(self, px: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor):
        if self._ddp is not None:
            return self._ddp(px, ids, mask)
        if self.feature_start:  # px and ids are the cached hidden states of images and captions
            return (self.model.encode_image_hidden(px, self.feature_start),
                    self.model.encode_text_hidden(ids, mask, self.feature_start))
        return self._encode_image(px), self._encode_text(ids, mask)

    def _pair_loss(self, img: torch.Tensor, txt: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        if self._ddp is not None:  # this rank's rows against every rank's embeddings (with gradients)
            from mwa_cli.train.distributed import global_model_loss

            return global_model_loss(self.model, img, txt, groups)
        return model_loss(self.model, img, txt, groups)

    def step(self, batch: dict) -> torch.Tensor:
        """One optimizer step on `batch`; returns the loss as a 0-d device tensor (no host sync)."""
        if self.optimizer is None:
            raise MwaError("this method has no trainable parameters: nothing to train")
        if self._cuda_graphs:  # a new iteration: CUDA-graph outputs of the last one may be overwritten
            torch.compiler.cudagraph_mark_step_begin()
        px = self.pixels(batch)
        ids = batch["text_hidden" if "text_hidden" in batch else "input_ids"].to(self.device, non_blocking=True)
        mask = batch["padding_mask"].to(self.device, non_blocking=True)
        groups = batch["group"].to(self.device, non_blocking=True) if "group" in batch else None
        while True:
            oom = False
            try:
                loss = self._forward_backward(px, ids, mask, groups)
            except _OOM_ERRORS:
                if not self._can_back_off():
                    raise
                oom = True
            if not oom:
                break
            self._halve_micro_batch(px.shape[0])
        lr = self.schedule.apply(self.optimizer, self.step_count)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step_count += 1
        self.last_lr = lr
        return loss

    def _can_back_off(self) -> bool:
        """Out-of-memory back-off is for CUDA (a CPU out-of-memory is a real error), single-process only: under DDP
        one rank cannot change its micro-batch alone (the collectives would no longer match)."""
        return self.device.type == "cuda" and self._ddp is None

    def _halve_micro_batch(self, batch: int) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        current = min(self.micro_batch or batch, batch)
        if current <= 1:
            raise MwaError("CUDA out of memory even with a micro-batch of 1",
                           hint="use a smaller backbone, --precision bf16, or a GPU with more memory", exit_code=4)
        self.micro_batch = max(1, current // 2)
        acc = math.ceil(batch / self.micro_batch)
        self.on_message(f"CUDA out of memory: micro-batch halved to {self.micro_batch}; the effective batch stays "
                        f"{batch} through {acc} gradient-accumulation steps")

    # ----------------------------------------------------------------- benchmark helpers
    def random_batch(self, batch_size: int, *, text_len: int | None = None, seed: int = 0,
                     augment: bool = True) -> dict:
        """A batch of random data in the trainer's input format (uint8 images from a private generator)."""
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

    def time_steps(self, batch: dict | Callable[[], dict], n: int = 15, warmup: int = 3,
                   window: int = 1) -> list[float]:
        """Benchmark only: `warmup` untimed steps, then `n` timings of `window` back-to-back steps each (the device
        synchronised at the ends of each window only, as in `mwa train`), as seconds per step. `batch` may be a
        callable that makes each step's batch (its time counts)."""
        make = batch if callable(batch) else (lambda: batch)
        for _ in range(warmup):
            self.step(make())
        self.synchronize()
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            for _ in range(window):
                self.step(make())
            self.synchronize()
            times.append((time.perf_counter() - t0) / window)
        return times

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
        self.schedule.load_state_dict(state["schedule"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step_count = int(state["step"])
        self.micro_batch = state.get("micro_batch")


def build_trainer(backbone: str | dict = "beit3-base", method: str = "mwa", *, method_options: dict | None = None,
                  weights: str | None = None, device: str = "auto", precision: str = "auto",
                  micro_batch: int | None = None, lr: float = 2e-4, layer_decay: float = 0.65,
                  weight_decay: float = 0.05, drop_path: float = 0.1, compile: bool | str = False,
                  total_steps: int = 1000, seed: int = 0, distributed: bool = False) -> Trainer:
    """A Trainer on a fresh backbone + method, exactly as `mwa train` builds it (for benchmarks; no data).

    `distributed`: under torchrun (after `distributed.init_from_env`), use this rank's device and wrap in DDP."""
    from mwa_cli.adapters.registry import apply_method
    from mwa_cli.models.presets import build_backbone

    dev = resolve_device(device)
    if distributed:
        from mwa_cli.train import distributed as dist_mod

        if dist_mod.get().enabled:
            dev = dist_mod.get().device
    prec = resolve_precision(precision, dev)
    _seed_everything(seed)
    model, _info = build_backbone(backbone, weights, drop_path=drop_path, device=dev)
    applied = apply_method(model, method, method_options)
    _cuda_setup(dev)
    trainer = Trainer(model, applied, device=dev, precision=prec, lr=lr, layer_decay=layer_decay,
                      weight_decay=weight_decay, micro_batch=micro_batch, compile=compile, distributed=distributed)
    trainer.schedule.fit(total_steps)
    return trainer


# ============================================================================ helpers
def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _cuda_setup(device: torch.device) -> None:
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def _peak_mem_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    except Exception:  # noqa: BLE001
        return 0.0


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU ({os.cpu_count()} threads)"


class _SignalFlag:
    """SIGINT/SIGTERM set a flag read at step boundaries; a second signal interrupts at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handler)

    def _handler(self, signum, _frame) -> None:
        if self.signum is not None:  # second signal: stop now (the checkpoint on disk stays intact)
            self.restore()
            raise KeyboardInterrupt
        self.signum = signum

    def restore(self) -> None:
        for sig, prev in self._previous.items():
            with contextlib.suppress(Exception):
                signal.signal(sig, prev)
        self._previous.clear()


def agree_stop(dctx, flag: _SignalFlag, must_stop: bool, time_due: bool, *more: bool) -> tuple:
    """One decision for every rank before a step: the signal any rank received, rank 0's budget stop and clock
    (and any `more` of rank 0's flags, e.g. a validation check due); returns (signal, must_stop, time_due, *more).

    The agreed signal decides. A signal that lands during the all-reduce stays in ``flag.signum`` and is agreed on
    before the next step (writing the agreed value back unconditionally would drop it: the run would go on)."""
    if not dctx.enabled:
        return (flag.signum, must_stop, time_due, *more)
    agreed, flags = dctx.agree(flag.signum, (must_stop, time_due, *more))
    if agreed is not None:
        flag.signum = agreed
    return (agreed, *flags)


def resolve_run_path(resume: str, out: str) -> Path:
    """`--resume` accepts a run folder path or a run name under --out."""
    p = Path(resume)
    if (p / "config.json").is_file():
        return p
    q = Path(out) / resume
    if (q / "config.json").is_file():
        return q
    raise ConfigError(f"no run to resume at {resume!r}", hint=f"give a run folder such as {Path(out) / 'NAME'}")


def _command_line() -> str:
    argv = list(sys.argv)
    if argv and argv[0].endswith(("__main__.py", "/mwa")):
        argv[0] = "mwa"
    return " ".join(shlex.quote(a) for a in argv)


def _say(progress: ProgressFn | None, text: str) -> None:
    if progress is not None:
        progress("message", {"text": text})


def _emit(progress: ProgressFn | None, event: str, data: dict) -> None:
    if progress is not None:
        progress(event, data)


# ============================================================================ train()
def process_age_s() -> float:
    """Seconds since this process started (Linux /proc; 0 elsewhere): the CLI counts the budget from there."""
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        with open("/proc/self/stat", encoding="ascii") as f:
            start = int(f.read().rsplit(")", 1)[1].split()[19]) / ticks
        with open("/proc/uptime", encoding="ascii") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start)
    except (OSError, ValueError, IndexError):
        return 0.0


def train(config: TrainConfig, progress: ProgressFn | None = None, *, count_from_process_start: bool = False
          ) -> RunResult:
    """Run (or resume) one training run; see the module docstring. Never calls sys.exit.

    `progress(event, data)` receives "setup", "plan", "step", "eval", "checkpoint", "message", "done" events.
    With `count_from_process_start` (the CLI), the budget clock starts when the process started, so interpreter
    and import time count too.
    """
    t_start = time.monotonic() - (process_age_s() if count_from_process_start else 0.0)
    from mwa_cli.train import distributed as dist_mod  # torchrun ranks (a no-op context in a single process)

    if count_from_process_start and dist_mod.start_time_monotonic() is not None:
        t_start = dist_mod.start_time_monotonic()  # started by `mwa train --devices N`: count from the launcher
    run: RunDir
    resume_state: dict | None = None
    if config.resume:
        run = RunDir(resolve_run_path(config.resume, config.out))
        saved = run.read_config()
        cfg = config_from_run(saved)
        cfg.resume = str(run.path)
        if "positives" not in saved:  # started before multi-positive targets existed: keep its loss
            cfg.positives = "off"
        if (run.path / "adapter_model.safetensors").is_file() and (run.path / "eval.json").is_file():
            raise ConfigError(f"{run.path} has already finished: nothing to resume",
                              hint=f"evaluate it with `mwa eval {run.path}`, or start a new run with another --name")
        found = ckpt_mod.find_checkpoint(run.path)
        if found is None:
            raise ConfigError(f"{run.path} has no checkpoint to resume from",
                              hint="the run stopped before its first checkpoint: start it again")
        resume_state = ckpt_mod.load_checkpoint(found)
        command = saved.get("command", "")
    else:
        cfg = config.validate()
        if not cfg.data_dir:
            raise ConfigError("no data directory given", hint="mwa train DATA_DIR --method mwa --budget 2h")
        command = cfg.command or dist_mod.user_command() or _command_line()

    device = resolve_device(cfg.device)
    dctx = dist_mod.init_from_env(device)  # world size 1 unless started by torchrun
    device = dctx.device
    if resume_state is not None and dctx.is_main:
        run.lock()  # before anything is written: a second `mwa train --resume` of the same run is refused
    if not dctx.is_main:
        progress = None  # rank 0 alone shows progress and writes files
        if resume_state is not None:
            run = dist_mod.NullRunDir(run.path)
    precision = resolve_precision(cfg.precision, device)
    _cuda_setup(device)
    _seed_everything(cfg.seed)

    # ------------------------------------------------------------------ data + model
    from mwa_cli.adapters.io import save_adapter
    from mwa_cli.adapters.registry import apply_method
    from mwa_cli.data.cache import ensure_cache
    from mwa_cli.data.manifest import load_dataset_info, load_manifest
    from mwa_cli.eval.evaluate import evaluate_model, evaluation_numerics, load_split, load_tokenizer
    from mwa_cli.models.presets import (NO_WEIGHTS, build_backbone, random_on_purpose, recommended_lr,
                                        require_weights)

    data_dir = Path(cfg.data_dir).resolve()
    df = load_manifest(data_dir)
    ds_info = load_dataset_info(data_dir)
    if resume_state is not None and saved.get("dataset_hash") and saved["dataset_hash"] != ds_info.get("dataset_hash"):
        raise DataError(f"the data in {data_dir} changed since this run started (dataset hash differs)",
                        hint="resume with the same data dir, or start a new run")
    # a new run refuses a backbone without weights; a resumed one keeps what it started with
    weights = (require_weights(cfg.backbone, cfg.weights) if resume_state is None
               else None if random_on_purpose(cfg.weights) else cfg.weights)
    model, binfo = build_backbone(cfg.backbone, weights, drop_path=cfg.drop_path, tokenizer=cfg.tokenizer,
                                  device=device)
    applied = apply_method(model, cfg.method, cfg.method_options)
    image_size = int(model.config.img_size)
    text_len = int(cfg.text_len or model.config.text_len)
    tok = load_tokenizer(binfo.tokenizer_path, text_len)
    if dctx.enabled and not dctx.is_main:
        dctx.barrier()  # rank 0 builds a missing image cache first
    cache = ensure_cache(data_dir, image_size, progress=progress is not None and not getattr(progress, "quiet", False))
    if dctx.enabled and dctx.is_main:
        dctx.barrier()

    train_df = df[df["split"] == "train"]
    if len(train_df) == 0 and cfg.method != "frozen":
        raise DataError(f"the train split of {data_dir} is empty", hint="re-run `mwa prepare` with more photos")
    captions = list(train_df["caption"])
    positives = resolve_positives(cfg.positives, captions, [str(x or "") for x in train_df["label"]])
    # captions that are mostly repeats (class-folder templates) have their own default rate (presets.py)
    default_lr = recommended_lr(binfo.name, cfg.method, templated=positives.templated)
    from mwa_cli.adapters.vocab import extension_params, setup_for_training  # vocabulary extension

    vocab_table, vocab_notes, vocab_record, vocab_lr = setup_for_training(
        model, applied, tok, captions, cfg.extend_vocab, resuming=resume_state is not None,
        init=cfg.extend_vocab_init, peak_lr=cfg.extend_vocab_lr, method_lr=cfg.lr, default_lr=default_lr,
        resumed=saved.get("token_additions") if resume_state is not None else None)
    if vocab_lr is not None:
        cfg.lr = vocab_lr
    if vocab_table is not None:
        tok = load_tokenizer(binfo.tokenizer_path, text_len, model=model)
    ids, mask = tok.encode_batch(captions)
    pairs = PairTable(image_rows=np.array([cache.index_of(i) for i in train_df["image_id"]], dtype=np.int64),
                      input_ids=ids, padding_mask=mask, flip_ok=flip_allowed_mask(captions, cfg.flip),
                      groups=positives.groups)
    n_pairs = len(pairs)
    val_data = load_split(data_dir, "val", cache) if (df["split"] == "val").any() else None
    final_split = cfg.final_split
    if not (df["split"] == final_split).any():
        raise DataError(f"the {final_split} split of {data_dir} is empty: nothing to evaluate the run on",
                        hint="re-run `mwa prepare` with a non-empty test split")
    test_data = load_split(data_dir, final_split, cache)

    # ------------------------------------------------------------------ batch size
    messages: list[str] = []

    def message(text: str) -> None:
        messages.append(text)
        _say(progress, text)

    for note in vocab_notes:
        message(note)
    if random_on_purpose(cfg.weights) and not config.resume:
        message(f"warning: --weights {NO_WEIGHTS}: {binfo.name} starts from random weights; its recall says nothing "
                "about the pretrained model")
    if cfg.positives == "auto" and positives.mode == "caption" and resume_state is None:
        message(f"the {positives.pairs} train captions hold only {positives.distinct_captions} distinct texts: pairs "
                "with the same caption are positives of each other (--positives caption; --positives label groups "
                "by label, --positives off turns it off)")

    auto_fields = []
    if cfg.lr is None:
        cfg.lr = default_lr
        auto_fields.append("lr")
        if default_lr != recommended_lr(binfo.name, cfg.method) and resume_state is None:
            message(f"learning rate {default_lr:g}, the default of {cfg.method} on {binfo.name} for captions that "
                    f"are mostly repeats ({positives.distinct_captions} distinct texts in {positives.pairs} train "
                    f"pairs; {recommended_lr(binfo.name, cfg.method):g} on varied captions); "
                    "--lr sets it")
    batch_size = cfg.batch_size
    micro = cfg.micro_batch
    use_cache = cfg.feature_cache != "off" and applied.trainable_params() > 0
    trainer = Trainer(model, applied, device=device, precision=precision, lr=cfg.lr, min_lr=cfg.min_lr,
                      warmup_frac=cfg.warmup_frac, weight_decay=cfg.weight_decay, layer_decay=cfg.layer_decay,
                      micro_batch=micro, compile=cfg.compile and not use_cache, on_message=message,
                      distributed=dctx.enabled)  # with a feature cache: compiled after the (eager) fill
    trainer.schedule.kind = cfg.schedule_kind
    if batch_size is None:  # the same default for every method keeps comparisons fair
        batch_size = GPU_DEFAULT_BATCH if device.type == "cuda" else CPU_AUTO_BATCH
        auto_fields.append("batch_size")
    elif batch_size == "auto":
        auto_fields.append("batch_size")
        if device.type == "cuda" and trainer.trains:
            ddp, trainer._ddp = trainer._ddp, None  # distributed: each rank probes its own GPU, no collectives
            batch_size = _find_max_batch(trainer, min(AUTO_BATCH_CAP, max(1, n_pairs // dctx.world_size)), text_len,
                                         message)
            trainer._ddp = ddp
            batch_size = dctx.min_int(batch_size) * dctx.world_size  # global batch: per-GPU size that fits on all
        else:
            batch_size = CPU_AUTO_BATCH
            if trainer.trains:
                message(f"--batch-size auto: on the CPU it uses {CPU_AUTO_BATCH} (no memory probe)")
    batch_size = int(batch_size)
    if n_pairs and batch_size > n_pairs:
        message(f"batch size {batch_size} is larger than the {n_pairs} training pairs: using {n_pairs}")
        batch_size = n_pairs
    if micro is not None and micro >= batch_size:
        trainer.micro_batch = None
    if dctx.enabled:  # --batch-size and --micro-batch are global: each rank runs 1/W of every (micro-)batch
        if n_pairs and batch_size == n_pairs:
            batch_size -= batch_size % dctx.world_size
        dist_mod.check_batch_split(batch_size, dctx.world_size)
        if trainer.micro_batch is not None:
            trainer.micro_batch = max(1, trainer.micro_batch // dctx.world_size)
    if use_cache:
        if not hasattr(model, "image_hidden"):  # the cache stores BEiT-3 hidden states between layers
            raise ConfigError(f"--feature-cache works with BEiT-3 backbones only, not {binfo.name}",
                              hint="train without --feature-cache")
        if applied.lowest_trainable_layer < 1:
            raise ConfigError(f"--feature-cache needs frozen layers below the adapters; method {cfg.method} with "
                              f"these options trains the lowest layer (or the embeddings)",
                              hint="adapt only the top layers, e.g. --option layers=top-4 (and no --extend-vocab)")
        trainer.use_feature_cache(applied.lowest_trainable_layer)
    dataset = TrainBatches(pairs, data_dir, image_size, len(cache.ids), max(1, batch_size), cfg.seed,
                           crop_scale_min=cfg.crop_scale_min, rank=dctx.rank, world_size=dctx.world_size,
                           augment=not use_cache, load_images=not use_cache)
    spe = dataset.steps_per_epoch

    # ------------------------------------------------------------------ run dir + config.json
    if resume_state is None:
        name = dist_mod.on_main(lambda: cfg.name or default_run_name(cfg.method, cfg.backbone))
        cfg.name = name
        run = dist_mod.on_main(lambda: RunDir.create(cfg.out, name))
        if not dctx.is_main:
            run = dist_mod.NullRunDir(run.path)
        record = cfg.to_dict()
        record.update(batch_size=batch_size, precision=precision, device=device.type, text_len=text_len,
                      method_options=applied.options, auto_resolved=auto_fields, positives=positives.mode,
                      positives_detail=positives.record())
        if cfg.tokenizer is None:
            record["tokenizer"] = binfo.tokenizer_path
        record.update(token_additions=vocab_table, vocab_extension=vocab_record)
        cfg_record = base_config_record(record, data_dir=str(data_dir), dataset_hash=ds_info.get("dataset_hash"),
                                        command=command)
        cfg_record["backbone_info"] = {"name": binfo.name, "weights_sha256": binfo.weights_sha256}
        if dctx.enabled:
            cfg_record["distributed"] = {"world_size": dctx.world_size, "backend": dctx.backend,
                                         "batch_per_device": batch_size // dctx.world_size}
        run.write_config(cfg_record)
    else:
        cfg_record = run.read_config()
    resume_cmd = f"mwa train --resume {shlex.quote(str(run.path))}" + (
        f" --devices {dctx.world_size}" if dctx.enabled else "")
    dist_mod.write_result({"run_dir": str(run.path), "status": "running"})  # for the launcher's failure message

    # ------------------------------------------------------------------ state
    acc = {"train_s": 0.0, "eval_s": 0.0, "checkpoint_s": 0.0, "data_wait_s": 0.0, "wall_prev_s": 0.0,
           "samples": 0, "segments": 0}
    planned = False
    if resume_state is not None:
        trainer.load_state_dict(resume_state["trainer"])
        acc.update(resume_state.get("acc", {}))
        planned = bool(resume_state.get("planned"))
        total_steps = int(resume_state["total_steps"])
        run.truncate_metrics(trainer.step_count)
        ckpt_mod.set_rng_state(resume_state["rng"])
        message(f"resuming {run.path} at step {trainer.step_count} of {total_steps}")
    acc["segments"] = int(acc.get("segments", 0)) + 1

    if resume_state is not None and int(resume_state.get("world_size", 1)) != dctx.world_size:
        saved_w = int(resume_state.get("world_size", 1))
        if trainer.micro_batch:  # the checkpoint holds the per-device micro-batch of its own device count
            trainer.micro_batch = max(1, trainer.micro_batch * saved_w // dctx.world_size)
        message(f"continuing on {dctx.world_size} device(s) a run that ran on {saved_w}: the data order is global, "
                f"so every step still sees the same global batch of {batch_size}")
    budget_s = cfg.budget_s
    limit = None
    if cfg.steps is not None:
        limit = int(cfg.steps)
    if cfg.epochs is not None:
        e_steps = max(1, int(round(cfg.epochs * spe)))
        limit = e_steps if limit is None else min(limit, e_steps)
    if limit is None and budget_s is None:
        limit = 10 * spe
        message(f"no --budget, --epochs or --steps: training 10 epochs ({limit} steps)")
    if not trainer.trains:
        limit = 0
        message(f"method {cfg.method} trains nothing: evaluating the backbone as it is")
    if resume_state is None:
        total_steps = limit if limit is not None else 0
        if budget_s is None or not trainer.trains:
            trainer.schedule.fit(max(1, total_steps))
            planned = True
        else:
            trainer.schedule.fit(limit or 100_000)
    deadline = None if budget_s is None else t_start + budget_s - float(acc["wall_prev_s"])

    planner = BudgetPlanner(budget_s=budget_s, deadline=deadline, val_items=(val_data.n_images + val_data.n_captions)
                            if val_data else 0, final_items=test_data.n_images + test_data.n_captions,
                            val_evals=cfg.val_evals if val_data else 0, checkpoint_every=cfg.checkpoint_every,
                            checkpoint_minutes=cfg.checkpoint_minutes, batch_size=max(1, batch_size),
                            val_share=cfg.val_share)
    keeper = BestKeeper(patience=cfg.patience_checks if val_data is not None and trainer.trains else 0)
    if resume_state is not None:
        planner.load_state(resume_state.get("planner"))
        keeper.load_state_dict(resume_state.get("best"))
    eval_dtype = amp_dtype(precision)
    identity = {"method": cfg.method, "backbone": binfo.name, "dataset_hash": ds_info.get("dataset_hash")}
    trainable_n = applied.trainable_params()
    total_n = applied.total_params()
    _emit(progress, "setup", {"run_dir": str(run.path), "method": cfg.method, "backbone": binfo.name,
                              "device": _device_name(device), "precision": precision, "batch_size": batch_size,
                              "micro_batch": trainer.micro_batch or batch_size, "train_pairs": n_pairs,
                              "steps_per_epoch": spe, "trainable_params": trainable_n, "total_params": total_n,
                              "vocab_extension_params": extension_params(model),
                              "budget_s": budget_s, "total_steps": total_steps if planned else None})
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    # ------------------------------------------------------------------ helpers bound to this run
    def run_eval(split_data, split_name: str, step: int, *, topk: bool = False):
        t0 = time.monotonic()
        def evaluate() -> tuple[dict, dict | None]:
            with evaluation_numerics():
                return evaluate_model(model, tok, data_dir, split_name, device=device, dtype=eval_dtype,
                                      batch_size=cfg.eval_batch_size, cache=cache, split_data=split_data,
                                      topk=topk, identity=identity)

        result, top = dist_mod.on_main(evaluate)  # rank 0 evaluates, the others wait
        seconds = time.monotonic() - t0
        acc["eval_s"] += seconds
        return result, top, seconds

    def log_eval(result: dict, step: int) -> None:
        row = {"kind": "eval", "step": step, "split": result["split"], "rsum": result["rsum"],
               "i2t_r1": result["i2t"]["r1"], "i2t_r5": result["i2t"]["r5"], "i2t_r10": result["i2t"]["r10"],
               "t2i_r1": result["t2i"]["r1"], "t2i_r5": result["t2i"]["r5"], "t2i_r10": result["t2i"]["r10"],
               "mean_recall": result["mean_recall"], "time_s": round(elapsed(), 3),
               "time_no_val_s": round(elapsed() - float(acc["eval_s"]), 3)}  # time to quality excludes checks
        run.append_metrics(row)
        _emit(progress, "eval", row)

    def elapsed() -> float:
        return time.monotonic() - t_start + float(acc["wall_prev_s"])

    def device_seconds() -> float:
        """Device-seconds of the whole run: each segment's wall time x its own number of devices."""
        prev = float(acc.get("device_prev_s", float(acc["wall_prev_s"]) * int(acc.get("prev_world_size", 1))))
        return prev + (elapsed() - float(acc["wall_prev_s"])) * dctx.world_size

    def save_ckpt(step: int) -> float:
        t0 = time.monotonic()
        if not dctx.is_main:  # rank 0 alone writes (DDP keeps the trainables and optimizer equal on every rank)
            return 0.0
        state = {"trainer": trainer.state_dict(), "rng": ckpt_mod.rng_state(),
                 "acc": dict(acc, wall_prev_s=elapsed(), device_prev_s=device_seconds()),
                 "total_steps": int(total_steps), "planned": planned, "batch_size": batch_size,
                 "world_size": dctx.world_size, "planner": planner.state(), "best": keeper.state_dict()}
        epoch, j = dataset.position(step)
        ckpt_mod.save_checkpoint(run.checkpoint_root, state, {"step": step, "epoch": epoch, "batch_in_epoch": j,
                                                              "total_steps": int(total_steps)})
        seconds = time.monotonic() - t0
        acc["checkpoint_s"] += seconds
        _emit(progress, "checkpoint", {"step": step, "seconds": seconds, "path": str(run.checkpoint_root / "last")})
        return seconds

    def write_timing(status: str) -> dict:
        wall = elapsed()
        train_s = float(acc["train_s"])
        steps_done = trainer.step_count
        timing = {
            "wall_s": round(wall, 3), "train_s": round(train_s, 3), "eval_s": round(float(acc["eval_s"]), 3),
            "checkpoint_s": round(float(acc["checkpoint_s"]), 3), "steps": steps_done,
            "samples": int(acc["samples"]),
            "samples_per_s": round(acc["samples"] / train_s, 3) if train_s > 0 else 0.0,
            "device_hours": round(device_seconds() / 3600.0, 6), "device_type": device.type,
            "device_name": _device_name(device), "n_devices": dctx.world_size, "peak_mem_gib": round(_peak_mem_gib(device), 4),
            "data_wait_fraction": round(acc["data_wait_s"] / train_s, 4) if train_s > 0 else 0.0,
            "budget_s": budget_s, "torch": torch.__version__, "mwa": __version__,
            "trainable_params": trainable_n, "total_params": total_n, "estimated": False,
            "vocab_extension_params": extension_params(model),
            "status": status, "planned_steps": int(total_steps), "batch_size": batch_size,
            "micro_batch": trainer.micro_batch or batch_size, "precision": precision,
            "feature_cache": fcache.describe() if fcache is not None else None,
            "val_share": round(float(acc.get("val_check_s", 0.0)) / wall, 4) if wall > 0 else 0.0,
            "val_zero_shot_s": round(float(acc.get("val_zero_shot_s", 0.0)), 3),
            "best": keeper.record(), "stop_reason": stop_reason,
        }
        run.write_timing(timing)
        return timing

    fcache = None
    collapse = None  # softmax loss only: the sigmoid loss has no single "everything equal" value
    if getattr(model, "loss_kind", "softmax") == "softmax":
        collapse = CollapseWatch(min(trainer.micro_batch or batch_size, batch_size) * dctx.world_size
                                 if trainer.micro_batch else batch_size,
                                 after_step=max(1, round(cfg.warmup_frac * max(1, total_steps))), lr=cfg.lr)
    flag = _SignalFlag()
    flag.install()
    try:
        if use_cache:  # the frozen layers run once per image and caption, not once per epoch
            fcache = _fill_feature_cache(trainer, cfg, pairs, data_dir, len(cache.ids), run.path, precision,
                                         progress, message)
            trainer.enable_compile(cfg.compile)
        # -------------------------------------------------------------- step-0 val eval (zero-shot point)
        step = trainer.step_count
        stop_reason = None
        last_check_step: int | None = None

        def best_weights() -> dict[str, torch.Tensor]:
            return {n: p.detach().to("cpu", copy=True) for n, p in applied.trainable_named_parameters()}

        def val_check(step_now: int) -> None:
            """A validation check during training: logged, timed (its share of the wall time), best kept."""
            nonlocal last_check_step
            result, _, secs = run_eval(val_data, "val", step_now)
            planner.observe_eval(secs, val_data.n_images + val_data.n_captions, warm=step_now > 0)
            key = "val_check_s" if step_now > 0 else "val_zero_shot_s"  # the step-0 check also measures the cost
            acc[key] = float(acc.get(key, 0.0)) + secs
            log_eval(result, step_now)
            last_check_step = step_now
            if keeper.observe(step_now, result["rsum"], elapsed() - float(acc["eval_s"]), best_weights):
                _emit(progress, "best", keeper.record())

        if resume_state is None and val_data is not None and cfg.val_evals != 0 and trainer.trains:
            val_check(0)

        # -------------------------------------------------------------- training loop
        interval_loss = torch.zeros((), device=device)
        interval_steps = 0
        last_loss: float | None = None
        t_interval = time.monotonic()
        last_ckpt_time = time.monotonic()
        last_good_ckpt_step = int(resume_state["trainer"]["step"]) if resume_state is not None else None
        status = "completed"
        measure = planner.new_measurement(device.type, max_steps=limit) if not planned else None
        eval_steps = planner.eval_steps(total_steps) if planned else set()
        t_seg = time.monotonic()
        if planned and budget_s is not None:
            planner.start_rate(step, float(acc["train_s"]))  # resumed: re-measure from here, warm-up included
        loader = None
        it = None
        if trainer.trains and (not planned or step < total_steps):
            loader = make_loader(dataset, step, workers=_workers(cfg, device), pin_memory=device.type == "cuda")
            it = iter(loader)

        def flush_train_time() -> None:
            nonlocal t_seg
            now = time.monotonic()
            acc["train_s"] += now - t_seg
            t_seg = now

        def check_interval(step_now: int, consume: bool = True) -> float | None:
            """Sync point: read the interval's mean loss; stop on a non-finite value (consume: start a new one)."""
            nonlocal interval_loss, interval_steps
            if interval_steps == 0:
                return None
            value = float(dctx.mean(interval_loss).item()) / interval_steps  # global batch's loss, same on all ranks
            if not math.isfinite(value):
                keep = (f"the last good checkpoint (step {last_good_ckpt_step}) is kept in "
                        f"{run.checkpoint_root / 'last'}" if last_good_ckpt_step is not None
                        else "no checkpoint had been written yet")
                raise NonFiniteLoss(
                    f"the loss became {value} between steps {step_now - interval_steps + 1} and {step_now}: "
                    f"training stopped; {keep}",
                    hint=f"lower --lr (it was {cfg.lr:g}) or use --precision bf16/fp32, and start a new run")
            if not consume:
                return value
            interval_loss = torch.zeros((), device=device)
            interval_steps = 0
            return value

        def log_train(step_now: int) -> None:
            """A metrics.jsonl train row (a sync point: reads the interval's mean loss)."""
            nonlocal last_loss, t_interval, t_seg
            flush_train_time()
            dt = time.monotonic() - t_interval
            n_int = interval_steps
            value = check_interval(step_now)
            if value is None:
                return
            last_loss = value
            row = {"kind": "train", "step": step_now, "epoch": round(step_now / spe, 4), "loss": value,
                   "lr": trainer.last_lr, "samples_per_s": round(n_int * batch_size / dt, 3) if dt > 0 else 0.0,
                   "mem_gib": round(_peak_mem_gib(device), 4), "time_s": round(elapsed(), 3)}
            run.append_metrics(row)
            _emit(progress, "step", dict(row, total_steps=total_steps if planned else None))
            if collapse is not None and (note := collapse.observe(step_now, value)):
                message(note)
            t_interval = time.monotonic()
            t_seg = time.monotonic()

        def timed_check(step_now: int) -> bool:
            """A validation check between steps (its time is not training time); True when early stopping says
            the run is done (`stop_reason` set and said)."""
            nonlocal t_seg, t_interval, stop_reason
            check_interval(step_now, consume=False)  # never evaluate non-finite weights
            flush_train_time()
            t_eval = time.monotonic()
            val_check(step_now)
            t_seg = time.monotonic()
            t_interval += time.monotonic() - t_eval
            if keeper.should_stop() and stop_allowed(step_now):
                stop_reason = keeper.reason()
                message(stop_reason)
                return True
            return False

        def stop_allowed(step_now: int) -> bool:
            """Early stopping waits for the warm-up and a quarter of the planned steps: a high learning rate often
            costs recall before it pays (full fine-tuning dips below zero-shot at first)."""
            return step_now >= max(trainer.schedule.warmup_steps, MIN_STOP_FRACTION * total_steps)

        def publish_best(step_now: int) -> None:
            """Put the best validation checkpoint's weights back: the published adapter is the best one seen."""
            if keeper.step is None or keeper.step == step_now or keeper.weights is None:
                return
            params = dict(applied.trainable_named_parameters())
            with torch.no_grad():
                for name, value in keeper.weights.items():
                    params[name].copy_(value.to(params[name].device, params[name].dtype))
            message(f"publishing the best adapter: step {keeper.step} (val RSUM {keeper.rsum:.2f}), not the last "
                    f"step {step_now}")

        def refit(step_now: int) -> int | None:
            """Rank 0: re-measure the step time and re-plan; the new total when it moved by ≥ 1 % (≥ 1 step)."""
            st = planner.observe_progress(step_now, float(acc["train_s"]))
            if st is None:
                return None
            new_total, why = planner.plan(step_now, st, limit, time.monotonic(),
                                          evals_left=sum(1 for e in eval_steps if e > step_now),
                                          checks_s=float(acc.get("val_check_s", 0.0)), elapsed_s=elapsed())
            new_total = max(new_total, step_now)
            if abs(new_total - total_steps) < max(1.0, 0.01 * total_steps):
                return None
            plan = cfg_record.setdefault("plan", {})
            plan["refits"] = int(plan.get("refits", 0)) + 1
            plan.update(total_steps=new_total, step_time_s=st, reason=why, replanned_at=step_now)
            if abs(new_total - total_steps) > 0.03 * total_steps:  # say and write the larger moves only
                message("re-planned: " + why)
                _emit(progress, "plan", {"total_steps": new_total, "reason": why, "step_time_s": st,
                                         "budget_s": budget_s})
                run.write_config(cfg_record)
            return new_total

        try:
            while it is not None and (not planned or step < total_steps):
                must_stop = planned and budget_s is not None and planner.must_stop(step, total_steps, eval_steps)
                time_due = time.monotonic() - last_ckpt_time >= cfg.checkpoint_minutes * 60
                flush_train_time()
                val_due = (planned and val_data is not None and last_check_step != step and
                           planner.val_due(float(acc.get("val_check_s", 0.0)), elapsed()))
                stop_signal, must_stop, time_due, val_due = agree_stop(dctx, flag, must_stop, time_due, val_due)
                if stop_signal is not None:
                    break
                if val_due and not must_stop:  # cost-aware check, between steps (the weights of `step`)
                    if timed_check(step):
                        break
                    continue
                if must_stop:
                    stop_reason = (f"stopping at step {step} of {total_steps}: the remaining budget is needed for "
                                   "the final evaluation and artefacts")
                    message(stop_reason)
                    break
                t_wait = time.monotonic()
                try:
                    batch = next(it)
                except Exception as exc:  # noqa: BLE001 - a worker's error or death, or the loader's timeout
                    raise loader_failure(exc, step + 1, resume_cmd if last_good_ckpt_step is not None else None
                                         ) from None
                if fcache is not None:
                    batch = fcache.inputs(batch, device)
                acc["data_wait_s"] += time.monotonic() - t_wait
                dist_mod.reseed_rank(cfg.seed, step)  # ranks > 0: this step's own dropout / drop-path draws
                loss = trainer.step(batch)
                step = trainer.step_count
                interval_loss += loss
                interval_steps += 1
                acc["samples"] += batch_size

                if measure is not None:  # budget: warm-up measurement, then fit the schedule
                    done = measure.tick(step, trainer.synchronize)
                    if dctx.enabled:
                        done = dctx.broadcast_object(done)  # rank 0's clock decides
                    if done:
                        log_train(step)  # syncs and checks the loss is finite before the checkpoint
                        flush_train_time()
                        secs = save_ckpt(step)
                        last_good_ckpt_step = step
                        last_ckpt_time = time.monotonic()
                        planner.observe_checkpoint(secs)
                        if val_data is not None and cfg.val_evals != 0 and not planner.warm_eval_seen:
                            val_check(step)  # the step-0 check was the process's first (cold): measure a warm one
                        total_steps, why = dist_mod.on_main(lambda: planner.plan(
                            step, measure.step_time, limit, time.monotonic(),
                            checks_s=float(acc.get("val_check_s", 0.0)), elapsed_s=elapsed()))
                        trainer.schedule.fit(max(1, total_steps))
                        planned = True
                        measure = None
                        eval_steps = planner.eval_steps(total_steps)
                        _emit(progress, "plan", {"total_steps": total_steps, "reason": why,
                                                 "step_time_s": planner.step_time, "budget_s": budget_s})
                        message(why)
                        cfg_record["plan"] = {"total_steps": total_steps, "step_time_s": planner.step_time,
                                              "warmup_steps": trainer.schedule.warmup_steps, "reason": why,
                                              "schedule": trainer.schedule.kind, "refits": 0}
                        run.write_config(cfg_record)
                        t_seg = time.monotonic()
                        planner.start_rate(step, float(acc["train_s"]))
                        if step >= total_steps:
                            break
                        continue

                logged = step % cfg.log_every == 0 or (planned and step >= total_steps) or step == 1
                if logged:
                    log_train(step)
                if planned and budget_s is not None and (logged or (device.type != "cuda" and not dctx.enabled)):
                    # refit the plan to the step time measured over the recent window (CPU: host clock is exact,
                    # every step; CUDA/DDP: at logging steps, which sync anyway)
                    flush_train_time()
                    new_total = dist_mod.on_main(lambda: refit(step))
                    if new_total is not None:
                        total_steps = new_total
                        trainer.schedule.fit(max(1, total_steps), at_step=step)
                        eval_steps = {e for e in planner.eval_steps(total_steps) if e > step} | {
                            e for e in eval_steps if e <= step}
                is_last = planned and step >= total_steps
                if step in eval_steps and not is_last and val_data is not None and timed_check(step):
                    break
                due = (cfg.checkpoint_every > 0 and step % cfg.checkpoint_every == 0) or (
                    cfg.checkpoint_every <= 0 and (time_due if dctx.enabled else
                                                   time.monotonic() - last_ckpt_time >= cfg.checkpoint_minutes * 60))
                if due and not is_last:
                    check_interval(step, consume=False)  # never checkpoint/evaluate non-finite weights
                    flush_train_time()
                    secs = save_ckpt(step)
                    planner.observe_checkpoint(secs)
                    last_good_ckpt_step = step
                    last_ckpt_time = time.monotonic()
                    t_seg = time.monotonic()
                    t_interval += secs  # samples/s counts training time only
            flush_train_time()
            last_loss = check_interval(step) or last_loss
        except NonFiniteLoss as exc:
            flush_train_time()
            write_timing("nonfinite")
            return RunResult(run.path, "nonfinite", EXIT_NONFINITE, trainer.step_count, int(total_steps),
                             message=exc.message + (f"\n  hint: {exc.hint}" if exc.hint else ""),
                             timing={}, last_loss=None)
        finally:
            close_loader(it)
        if cfg_record.get("plan"):
            run.write_config(cfg_record)  # the plan as it finally stood (small refits are not written each time)
        if stop_reason is None and budget_s is not None and limit is not None and step >= limit and trainer.trains:
            stop_reason = f"the --steps/--epochs limit ({limit} steps) ended the run before its budget"
            message(stop_reason)

        # -------------------------------------------------------------- interrupted
        if dctx.enabled:  # the same decision on every rank, also for a signal after the last step's agreement
            flag.signum, _ = dctx.agree(flag.signum)
        if flag.signum is not None:
            save_ckpt(step)
            dctx.barrier()  # no rank leaves before rank 0 has written the checkpoint
            code = EXIT_SIGTERM if flag.signum == signal.SIGTERM else EXIT_SIGINT
            name = "SIGTERM" if flag.signum == signal.SIGTERM else "Ctrl-C (SIGINT)"
            timing = write_timing("interrupted")
            msg = (f"{name}: stopped at step {step} of {total_steps}; a resumable checkpoint is in "
                   f"{run.checkpoint_root / 'last'}. Resume with: {resume_cmd}")
            _emit(progress, "done", {"status": "interrupted", "message": msg})
            return RunResult(run.path, "interrupted", code, step, int(total_steps), message=msg,
                             resume_command=resume_cmd, timing=timing, last_loss=last_loss)

        # -------------------------------------------------------------- final evaluation and artefacts
        if trainer.trains and last_good_ckpt_step != step:
            save_ckpt(step)  # an interruption from here on resumes straight into the final evaluation
            last_good_ckpt_step = step
        flag.restore()  # from here on, Ctrl-C interrupts the (short) finalisation directly
        if val_data is not None and last_check_step != step:
            result, _, secs = run_eval(val_data, "val", step)
            log_eval(result, step)
            keeper.observe(step, result["rsum"], elapsed() - float(acc["eval_s"]), best_weights)
        publish_best(step)
        t0 = time.monotonic()
        if dctx.is_main:
            save_adapter(run.path, model, applied, binfo)
        acc["checkpoint_s"] += time.monotonic() - t0
        result, top, ranks = final_evaluation(run.path, final_split, device, precision, cfg.eval_batch_size, acc)
        run.write_eval(result, top, ranks=ranks)
        timing = write_timing("completed")
        msg = f"finished {step} steps in {timing['wall_s']:.1f} s; {final_split} RSUM {result['rsum']:.2f}"
        if stop_reason:
            msg += f" ({stop_reason})"
        if keeper.step is not None and keeper.step != step:
            msg += f"; the published adapter is the best one, from step {keeper.step} (val RSUM {keeper.rsum:.2f})"
        _emit(progress, "done", {"status": status, "message": msg, "eval": result, "timing": timing})
        return RunResult(run.path, status, EXIT_OK, step, int(total_steps), message=msg, eval=result,
                         timing=timing, last_loss=last_loss)
    finally:
        flag.restore()
        if fcache is not None:
            fcache.close()


def final_evaluation(run_path: Path, split: str, device: torch.device, precision: str, batch_size: int,
                     acc: dict) -> tuple[dict, dict | None, Any]:
    """The run's number: its published adapter loaded into a fresh model and evaluated by `evaluate_target`, the
    code `mwa eval RUN` runs, with the same precision and batch size (rank 0; the other ranks wait)."""
    from mwa_cli.eval.evaluate import evaluate_target
    from mwa_cli.train import distributed as dist_mod

    t0 = time.monotonic()
    if device.type == "cuda":
        torch.cuda.empty_cache()

    def run() -> tuple[dict, dict | None, Any]:
        result, top, _, ranks = evaluate_target(run_path, split=split, device=str(device), precision=precision,
                                                batch_size=batch_size)
        return result, top, ranks

    result, top, ranks = dist_mod.on_main(run)
    acc["eval_s"] += time.monotonic() - t0
    return result, top, ranks


def loader_failure(exc: BaseException, step: int, resume_cmd: str | None) -> MwaError:
    """A clear error for a data-loader failure at `step`: what failed, and how to go on."""
    text = str(exc).strip()
    if "Original Traceback" in text:  # a worker's exception: keep its first and last lines, not the traceback
        lines = [x for x in text.splitlines() if x.strip()]
        text = f"{lines[0]} {lines[-1].strip()}"
    what = f"loading the training batch of step {step} failed ({type(exc).__name__}: {text[:400]})"
    hint = (f"the last checkpoint is kept; after fixing the cause, resume with: {resume_cmd}" if resume_cmd
            else "no checkpoint had been written yet; after fixing the cause, start the run again")
    return MwaError(what, hint=hint + " (`--workers 0` loads in the training process, which shows the error "
                    "without worker processes)", exit_code=1)


def _fill_feature_cache(trainer: Trainer, cfg: TrainConfig, pairs: PairTable, data_dir: Path, n_cached: int,
                        run_path: Path, precision: str, progress: ProgressFn | None, message: Callable[[str], None]):
    """Fill the feature cache of the train split (progress events "cache"), and say what it holds."""
    from mwa_cli.train.data import to_pixels
    from mwa_cli.train.feature_cache import fill_feature_cache

    size = trainer.image_size
    k = trainer.feature_start
    message(f"feature cache: layers 0-{k - 1} are frozen, so their output is computed once per training image and "
            f"caption; images are used whole (no random crop or flip) so the cache stays valid every epoch")
    fc = fill_feature_cache(
        trainer.model, k, open_cache_array(data_dir, size, n_cached), pairs.image_rows, pairs.input_ids,
        pairs.padding_mask, lambda u8: to_pixels(u8, size), device=trainer.device, dtype=amp_dtype(precision),
        location=cfg.feature_cache, folder=run_path, batch_size=cfg.eval_batch_size,
        progress=lambda done, total: _emit(progress, "cache", {"done": done, "total": total}))
    d = fc.describe()
    message(f"feature cache: {d['images']} images + {d['captions']} captions, {d['gib']:.2f} GiB in "
            f"{d['location'].upper() if d['location'] in ('gpu', 'ram') else 'a file in the run folder'}, "
            f"filled in {d['fill_s']:.1f} s")
    return fc


def _workers(cfg: TrainConfig, device: torch.device) -> int:
    if cfg.workers is not None:
        return max(0, int(cfg.workers))
    if device.type != "cuda":
        return 0
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        n = os.cpu_count() or 2
    return max(1, min(8, n // 2))


def _find_max_batch(trainer: Trainer, cap: int, text_len: int, message: Callable[[str], None]) -> int:
    """CUDA: the largest power-of-two micro-batch ≤ cap whose forward+backward fits (weights untouched)."""
    best = 0
    b = 8 if cap >= 8 else cap
    while b <= cap:
        batch = trainer.random_batch(b, text_len=text_len, seed=1)
        ok = True
        try:
            px = trainer.pixels(batch)
            ids = batch["input_ids"].to(trainer.device)
            mask = batch["padding_mask"].to(trainer.device)
            trainer._forward_backward(px, ids, mask)
            torch.cuda.synchronize(trainer.device)
        except _OOM_ERRORS:
            ok = False
        trainer.optimizer.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()
        if not ok:
            break
        best = b
        if b == cap:
            break
        b = min(cap, b * 2)
    if best == 0:
        raise MwaError("CUDA out of memory even with a batch of 8", hint="use a smaller backbone or --precision bf16",
                       exit_code=4)
    message(f"--batch-size auto: the largest micro-batch that fits is {best}; using batch size {best}")
    return best
