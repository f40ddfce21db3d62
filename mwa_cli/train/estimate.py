"""The trainer's side of ``mwa report --estimate``: full fine-tuning's step time, measured for a few steps.

``measure_full_ft_step(request)`` is the measurement ``mwa_cli/report/estimate.py`` extrapolates from (the request
and result types are defined here, with it): it builds the full fine-tuning trainer exactly as
``mwa train --method full-ft`` would for the reference run's configuration (backbone, weights, effective batch,
micro-batch, precision, device, optimizer settings) with ``trainer.build_trainer``, feeds it real batches of the
run's data dir through the trainer's own input pipeline (``setup.train_pairs`` + ``TrainBatches`` +
``make_loader`` with ``setup.loader_workers``: same pair table, cache, tokenisation, augmentation and workers as
``mwa train``), runs ``request.warmup_steps`` un-timed steps, then ``request.steps`` timed steps (the device is
synchronised around each timed step) and returns the median. It writes nothing into any run folder (the data
dir's image cache is built, like ``mwa train`` would, only if it is missing).

A timed step is what ``train()`` counts as training time for one step: fetching the next batch from the loader
(normally ~0: workers prefetch) plus ``Trainer.step``. The module imports torch only when it measures, so the
report can load the types without it.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mwa_cli.errors import ConfigError, DataError, MwaError

if TYPE_CHECKING:
    import torch


@dataclass
class EstimateRequest:
    config: dict[str, Any]  # reference run's config.json with "method" = "full-ft"
    data_dir: Path | None
    reference_run: Path
    steps: int = 10
    warmup_steps: int = 3


@dataclass
class StepMeasurement:
    step_s: float  # median seconds per optimizer step (after warm-up)
    samples_per_step: int  # effective batch: samples consumed by one optimizer step
    total_params: int
    peak_mem_gib: float | None = None
    device_type: str = "cuda"  # "cuda" | "cpu"
    device_name: str = ""
    n_devices: int = 1
    bytes_per_param: float = 4.0
    steps_measured: int = 0
    torch: str = ""


FULL_FT = "full-ft"


def _train_config(request: EstimateRequest):
    """The reference run's TrainConfig with method full-ft (the reference method's options dropped)."""
    from mwa_cli.train.config import config_from_run

    raw = dict(request.config)
    raw["method"] = FULL_FT
    raw["method_options"] = {}
    raw["resume"] = None
    if request.data_dir is not None:
        raw["data_dir"] = str(request.data_dir)
    return config_from_run(raw)


def _batch_size(cfg, device: torch.device) -> int:
    """The reference run's effective batch as recorded in its config.json (resolved by `mwa train`)."""
    from mwa_cli.train.setup import default_batch_size

    bs = cfg.batch_size
    if isinstance(bs, int) and bs >= 1:
        return bs
    # not resolved in config.json (should not happen for runs written by `mwa train`): its defaults
    return default_batch_size(device)


def measure_full_ft_step(request: EstimateRequest) -> StepMeasurement:
    """Median seconds per full fine-tuning optimizer step on this machine, on real batches (see module doc)."""
    import torch

    from mwa_cli.data.cache import ensure_cache
    from mwa_cli.data.manifest import load_manifest
    from mwa_cli.models.presets import find_tokenizer
    from mwa_cli.models.presets import resolve_config as resolve_backbone
    from mwa_cli.models.run_tokenizer import load_tokenizer
    from mwa_cli.models.text_pad import padding_is_free
    from mwa_cli.runtime import resolve_device
    from mwa_cli.train.compile_policy import compile_setting
    from mwa_cli.train.data import TrainBatches, make_loader
    from mwa_cli.train.measure import device_name, peak_mem_gib
    from mwa_cli.train.setup import loader_workers, train_pairs
    from mwa_cli.train.trainer import build_trainer

    if request.data_dir is None or not (Path(request.data_dir) / "manifest.csv").is_file():
        raise DataError(f"--estimate needs the data the reference run {request.reference_run} was trained on "
                        "(its config.json data_dir was not found)",
                        hint="pass the prepared data dir with --data DATA_DIR")
    steps = max(1, int(request.steps))
    warmup = max(0, int(request.warmup_steps))
    cfg = _train_config(request)
    data_dir = Path(request.data_dir).resolve()

    compiled = compile_setting(cfg.compile, cfg.compile_mode, FULL_FT, resolve_device(cfg.device).type,
                               cfg.budget_s, cfg.backbone)  # as `mwa train` with that budget would
    try:
        trainer = build_trainer(cfg.backbone, FULL_FT, method_options=None, weights=cfg.weights, device=cfg.device,
                                precision=cfg.precision, micro_batch=cfg.micro_batch, lr=cfg.lr,
                                layer_decay=cfg.layer_decay, weight_decay=cfg.weight_decay, drop_path=cfg.drop_path,
                                compile=compiled, total_steps=max(1, warmup + steps), seed=cfg.seed)
    except ConfigError as exc:
        raise ConfigError(f"cannot build full fine-tuning as the reference run was trained: {exc.message}",
                          hint=exc.hint or "run --estimate on the kind of machine the runs were trained on"
                          ) from None
    device = trainer.device
    model = trainer.model

    # ---------------------------------------------------------------- real batches, as `mwa train` makes them
    tokenizer_path = cfg.tokenizer
    if not tokenizer_path:  # config.json of `mwa train` records it; older runs: the backbone's own
        try:
            name, _ = resolve_backbone(cfg.backbone)
            tokenizer_path = find_tokenizer(name, cfg.weights, None)
        except MwaError:
            tokenizer_path = None
    image_size = int(model.config.img_size)
    text_len = int(cfg.text_len or model.config.text_len)
    tok = load_tokenizer(tokenizer_path, text_len)
    df = load_manifest(data_dir)
    cache = ensure_cache(data_dir, image_size)
    train_df = df[df["split"] == "train"]
    if len(train_df) == 0:
        raise DataError(f"the train split of {data_dir} is empty: nothing to measure full fine-tuning on")
    captions = list(train_df["caption"])
    ids, mask = tok.encode_batch(captions)
    pairs = train_pairs(cache, train_df, ids, mask, captions, cfg.flip)
    batch_size = min(_batch_size(cfg, device), len(pairs))
    if trainer.micro_batch is not None and trainer.micro_batch >= batch_size:
        trainer.micro_batch = None
    dataset = TrainBatches(pairs, data_dir, image_size, len(cache.ids), batch_size, cfg.seed,
                           crop_scale_min=cfg.crop_scale_min, trim_text=padding_is_free(model))
    loader = make_loader(dataset, 0, workers=loader_workers(cfg, device), pin_memory=device.type == "cuda",
                         stop_step=warmup + steps)

    # ---------------------------------------------------------------- warm-up, then timed steps
    times: list[float] = []
    it = iter(loader)
    try:
        if trainer.compiled:  # as `mwa train`: compiled before the steps, none of them pays for it
            first = dataset[0]
            trainer.warm_compile(first, dataset.other_widths(first))
        for _ in range(warmup):
            trainer.step(next(it))
        trainer.synchronize()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for _ in range(steps):
            t0 = time.perf_counter()
            loss = trainer.step(next(it))
            trainer.synchronize()
            times.append(time.perf_counter() - t0)
        if not torch.isfinite(loss).item():
            raise MwaError("full fine-tuning's loss became non-finite while measuring its step time",
                           hint="train a full fine-tuning run instead (or lower --lr in its configuration)")
        peak = float(peak_mem_gib(device))
        total = int(trainer.applied.total_params()) if trainer.applied is not None else int(
            sum(p.numel() for p in model.parameters()))
        name = device_name(device)
    finally:
        del it, loader
    del trainer, model
    if device.type == "cuda":
        torch.cuda.empty_cache()

    return StepMeasurement(step_s=float(statistics.median(times)), samples_per_step=int(batch_size),
                           total_params=total, peak_mem_gib=round(peak, 4), device_type=device.type,
                           device_name=name, n_devices=1, bytes_per_param=4.0, steps_measured=len(times),
                           torch=torch.__version__)
