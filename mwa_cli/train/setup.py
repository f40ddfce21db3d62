"""Everything a training run needs before its first step, built in one place.

`setup_run(config, progress, t_start) -> RunSetup`: resolves the configuration (a new run or `--resume`), the
device, precision and ranks, loads the data, builds the model, method and `Trainer`, resolves the batch size,
creates the run folder and its config.json (or reads a resumed one's), restores a checkpoint's state, and sets up
the step limit, budget planner and best-checkpoint keeper. `train/loop.py` runs the loop over the result.

The smaller pieces (`train_pairs`, `default_batch_size`, `loader_workers`) are shared with the full fine-tuning
step measurement of `train/estimate.py`.
"""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from mwa_cli.data.cache import ProgressCallback, default_workers
from mwa_cli.errors import ConfigError, DataError
from mwa_cli.models.text_pad import padding_is_free
from mwa_cli.runtime import resolve_device, resolve_precision
from mwa_cli.train import checkpoint as ckpt_mod
from mwa_cli.train.batch_probe import find_max_batch
from mwa_cli.train.budget import BudgetPlanner, end_of_run
from mwa_cli.train.compile_policy import budget_too_short, compile_setting, short_budget_note, step_graph_setting
from mwa_cli.train.config import TrainConfig, config_from_run, default_steps
from mwa_cli.train.data import PairTable, TrainBatches, flip_allowed_mask
from mwa_cli.train.early_stop import BestKeeper
from mwa_cli.train.measure import device_name
from mwa_cli.train.metric_sinks import attach_sinks
from mwa_cli.train.positives import resolve_positives
from mwa_cli.train.run_dir import RunDir, base_config_record, default_run_name
from mwa_cli.train.trainer import Trainer, cuda_setup, seed_everything

CPU_AUTO_BATCH = 32
GPU_DEFAULT_BATCH = 128
AUTO_BATCH_CAP = 256

ProgressFn = Callable[[str, dict], None]


@dataclass
class RunSetup:
    """What a training run needs, as `setup_run` built it. Ranks > 0 have no progress and a `NullRunDir`."""
    cfg: TrainConfig
    progress: ProgressFn | None
    message: Callable[[str], None]  # says a line to the user (progress "message" events)
    t_start: float  # time.monotonic() when the budget clock started
    dctx: Any  # dist.context.DistContext: world size 1 in a single process
    device: torch.device
    precision: str
    data_dir: Path
    model: Any
    binfo: Any  # mwa_cli.models.base.BackboneInfo
    applied: Any  # the method applied to the model (adapters/registry.py)
    tok: Any
    cache: Any  # the data dir's image cache
    pairs: PairTable
    val_data: Any | None
    final_split: str
    identity: dict  # method, backbone, dataset hash: stamped on every evaluation
    trainer: Trainer
    batch_size: int
    use_cache: bool  # --feature-cache: train from cached hidden states of the frozen layers
    dataset: TrainBatches
    run: RunDir
    cfg_record: dict  # config.json as written (the plan is added to it while training)
    resume_cmd: str
    resume_state: dict | None
    acc: dict  # time and sample counters, continued across resumed segments
    planned: bool  # total_steps is final (no budget measurement pending)
    total_steps: int
    limit: int | None  # --steps/--epochs as steps (0 when the method trains nothing)
    budget_s: float | None
    planner: BudgetPlanner
    keeper: BestKeeper
    trainable_params: int
    total_params: int


def setup_run(config: TrainConfig, progress: ProgressFn | None, t_start: float) -> RunSetup:
    """Build what the run of `config` needs (see the module docstring); `t_start` starts the budget clock."""
    from mwa_cli.train.dist.context import init_from_env  # torchrun ranks (a no-op context in a single process)
    from mwa_cli.train.dist.handoff import write_result
    from mwa_cli.train.dist.rank0 import NullRunDir, on_main

    cfg, run, resume_state, used, saved, command = _resolve_config(config, progress)
    device = resolve_device(cfg.device)
    dctx = init_from_env(device)  # world size 1 unless started by torchrun
    device = dctx.device
    if resume_state is not None and dctx.is_main:
        run.lock()  # before anything is written: a second `mwa train --resume` of the same run is refused
        ckpt_mod.settle(run.path, used)  # the checkpoint resumed from becomes `last`, the other one goes
    if not dctx.is_main:
        progress = None  # rank 0 alone shows progress and writes files
        if resume_state is not None:
            run = NullRunDir(run.path)
    precision = resolve_precision(cfg.precision, device)
    cuda_setup(device)
    seed_everything(cfg.seed)

    # ------------------------------------------------------------------ data + model
    from mwa_cli.adapters.registry import apply_method, recommended_lr
    from mwa_cli.data.cache import ensure_cache
    from mwa_cli.data.manifest import load_dataset_info, load_manifest
    from mwa_cli.eval.evaluate import load_split
    from mwa_cli.models.presets import NO_WEIGHTS, build_backbone, random_on_purpose, require_weights
    from mwa_cli.models.run_tokenizer import load_tokenizer

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
    cache = ensure_cache(data_dir, image_size, progress=images_progress(progress, f"caching {image_size}px images"))
    if dctx.enabled and dctx.is_main:
        dctx.barrier()

    train_df = df[df["split"] == "train"]
    if len(train_df) == 0 and cfg.method != "frozen":
        raise DataError(f"the train split of {data_dir} is empty", hint="re-run `mwa prepare` with more photos")
    captions = list(train_df["caption"])
    positives = resolve_positives(cfg.positives, captions, [str(x or "") for x in train_df["label"]])
    # captions that are mostly repeats (class-folder templates) have their own default rate (method modules)
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
    pairs = train_pairs(cache, train_df, ids, mask, captions, cfg.flip, positives.groups)
    n_pairs = len(pairs)
    val_data = load_split(data_dir, "val", cache) if (df["split"] == "val").any() else None
    final_split = cfg.final_split
    if not (df["split"] == final_split).any():
        raise DataError(f"the {final_split} split of {data_dir} is empty: nothing to evaluate the run on",
                        hint="re-run `mwa prepare` with a non-empty test split")
    test_data = load_split(data_dir, final_split, cache)

    # ------------------------------------------------------------------ messages, trainer, batch size
    def message(text: str) -> None:
        say(progress, text)

    for note in vocab_notes:
        message(note)
    if cfg.workers is not None and cfg.workers > (cores := default_workers()):
        message(f"--workers {cfg.workers}: this machine has {cores} CPU cores, so {cores} data loader workers are "
                "used (more only slow every step down)")
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
    use_cache = cfg.feature_cache != "off" and applied.trainable_params() > 0
    compile_args = (cfg.compile, cfg.compile_mode, cfg.method, device.type, cfg.budget_s, binfo.name)
    if cfg.budget_s is not None and budget_too_short(cfg.compile, device.type, cfg.budget_s, binfo.name):
        message(short_budget_note(cfg.budget_s, binfo.name))
    trainer = Trainer(model, applied, device=device, precision=precision, lr=cfg.lr, min_lr=cfg.min_lr,
                      warmup_frac=cfg.warmup_frac, weight_decay=cfg.weight_decay, layer_decay=cfg.layer_decay,
                      micro_batch=cfg.micro_batch, on_message=message, distributed=dctx.enabled,
                      compile=False if use_cache else compile_setting(*compile_args),  # cache: compiled after its fill
                      cuda_graph=step_graph_setting(*compile_args))
    trainer.schedule.kind = cfg.schedule_kind
    batch_size = _resolve_batch_size(cfg, trainer, device, dctx, n_pairs, text_len, message, auto_fields)
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
                           augment=not use_cache, load_images=not use_cache, trim_text=padding_is_free(model))
    spe = dataset.steps_per_epoch

    # ------------------------------------------------------------------ run dir + config.json
    if resume_state is None:
        name = on_main(lambda: cfg.name or default_run_name(cfg.method, cfg.backbone))
        cfg.name = name
        run = on_main(lambda: RunDir.create(cfg.out, name))
        if not dctx.is_main:
            run = NullRunDir(run.path)
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
    write_result({"run_dir": str(run.path), "status": "running"})  # for the launcher's failure message

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
        limit, how = default_steps(positives.templated, n_pairs, spe)
        message(f"no --budget, --epochs or --steps: training {limit} steps ({how})")
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
    planner.end = end_of_run(trainer, binfo.build_s)  # the last checkpoint, published weights, final model build
    keeper = BestKeeper(patience=cfg.patience_checks if val_data is not None and trainer.trains else 0)
    if resume_state is not None:
        planner.load_state(resume_state.get("planner"))
        keeper.load_state_dict(resume_state.get("best"))
    identity = {"method": cfg.method, "backbone": binfo.name, "dataset_hash": ds_info.get("dataset_hash")}
    trainable_n = applied.trainable_params()
    total_n = applied.total_params()
    emit(progress, "setup", {"run_dir": str(run.path), "method": cfg.method, "backbone": binfo.name,
                             "device": device_name(device), "precision": precision, "batch_size": batch_size,
                             "micro_batch": trainer.micro_batch or batch_size, "train_pairs": n_pairs,
                             "steps_per_epoch": spe, "trainable_params": trainable_n, "total_params": total_n,
                             "vocab_extension_params": extension_params(model),
                             "budget_s": budget_s, "total_steps": total_steps if planned else None,
                             "budget_left_s": None if deadline is None else deadline - time.monotonic()})
    attach_sinks(run, cfg.log, batch_size=batch_size,
                 resumed_at=trainer.step_count if resume_state is not None else None)  # --log tensorboard
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    return RunSetup(cfg=cfg, progress=progress, message=message, t_start=t_start, dctx=dctx, device=device,
                    precision=precision, data_dir=data_dir, model=model, binfo=binfo, applied=applied, tok=tok,
                    cache=cache, pairs=pairs, val_data=val_data, final_split=final_split, identity=identity,
                    trainer=trainer, batch_size=batch_size, use_cache=use_cache, dataset=dataset, run=run,
                    cfg_record=cfg_record, resume_cmd=resume_cmd, resume_state=resume_state, acc=acc, planned=planned,
                    total_steps=total_steps, limit=limit, budget_s=budget_s, planner=planner, keeper=keeper,
                    trainable_params=trainable_n, total_params=total_n)


def say(progress: ProgressFn | None, text: str) -> None:
    """A "message" progress event."""
    if progress is not None:
        progress("message", {"text": text})


def emit(progress: ProgressFn | None, event: str, data: dict) -> None:
    """A progress event (nothing without a progress function)."""
    if progress is not None:
        progress(event, data)


def images_progress(progress: ProgressFn | None, description: str) -> ProgressCallback | None:
    """The data layer's `progress(done, total)` of a photo decoding pass, as "images" progress events."""
    if progress is None:
        return None
    return lambda done, total: progress("images", {"description": description, "done": done, "total": total})


def resolve_run_path(resume: str, out: str) -> Path:
    """`--resume` accepts a run folder path or a run name under --out."""
    p = Path(resume)
    if (p / "config.json").is_file():
        return p
    q = Path(out) / resume
    if (q / "config.json").is_file():
        return q
    raise ConfigError(f"no run to resume at {resume!r}", hint=f"give a run folder such as {Path(out) / 'NAME'}")


def command_line() -> str:
    """This process's command line as a shell command (`mwa ...`), for config.json and resume hints."""
    argv = list(sys.argv)
    if argv and argv[0].endswith(("__main__.py", "/mwa")):
        argv[0] = "mwa"
    return " ".join(shlex.quote(a) for a in argv)


def _resolve_config(config: TrainConfig, progress: ProgressFn | None
                    ) -> tuple[TrainConfig, RunDir | None, dict | None, Path | None, dict, str]:
    """A new run's validated config, or a resumed run's own: (cfg, run folder, checkpoint state, the checkpoint
    folder it came from, its config.json, command line); folder, state and checkpoint are None for a new run."""
    from mwa_cli.train.dist.env import user_command

    run = None
    used: Path | None = None
    resume_state: dict | None = None
    saved: dict = {}
    if config.resume:
        run = RunDir(resolve_run_path(config.resume, config.out))
        saved = run.read_config()
        cfg = config_from_run(saved, str(run.config_path))
        cfg.resume = str(run.path)
        if "positives" not in saved:  # started before multi-positive targets existed: keep its loss
            cfg.positives = "off"
        if (run.path / "adapter_model.safetensors").is_file() and (run.path / "eval.json").is_file():
            raise ConfigError(f"{run.path} has already finished: nothing to resume",
                              hint=f"evaluate it with `mwa eval {run.path}`, or start a new run with another --name")
        found = ckpt_mod.resume_checkpoint(run.path, warn=lambda text: emit(progress, "message",
                                                                             {"text": f"warning: {text}"}))
        if found is None:
            raise ConfigError(f"{run.path} has no checkpoint to resume from",
                              hint="the run stopped before its first checkpoint: start it again")
        used, resume_state = found
        command = saved.get("command", "")
    else:
        cfg = config.validate()
        if not cfg.data_dir:
            raise ConfigError("no data directory given", hint="mwa train DATA_DIR --method mwa --budget 2h")
        command = cfg.command or user_command() or command_line()
    return cfg, run, resume_state, used, saved, command


def _resolve_batch_size(cfg: TrainConfig, trainer: Trainer, device: torch.device, dctx, n_pairs: int, text_len: int,
                       message: Callable[[str], None], auto_fields: list[str]) -> int:
    """The global batch size (`--batch-size`, its default, or `auto`), capped by the training pairs and split
    over the ranks; sets the trainer's micro-batch to match."""
    from mwa_cli.train.dist.sharding import check_batch_split

    batch_size = cfg.batch_size
    micro = cfg.micro_batch
    if batch_size is None:  # the same default for every method keeps comparisons fair
        batch_size = default_batch_size(device)
        auto_fields.append("batch_size")
    elif batch_size == "auto":
        auto_fields.append("batch_size")
        if device.type == "cuda" and trainer.trains:
            batch_size = find_max_batch(trainer, min(AUTO_BATCH_CAP, max(1, n_pairs // dctx.world_size)), text_len,
                                        message)
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
        check_batch_split(batch_size, dctx.world_size)
        if trainer.micro_batch is not None:
            trainer.micro_batch = max(1, trainer.micro_batch // dctx.world_size)
    return batch_size


def default_batch_size(device: torch.device) -> int:
    """The batch size without --batch-size: the same for every method, which keeps comparisons fair."""
    return GPU_DEFAULT_BATCH if device.type == "cuda" else CPU_AUTO_BATCH


def train_pairs(cache, train_df, ids: np.ndarray, mask: np.ndarray, captions: list[str], flip: str,
                groups: np.ndarray | None = None) -> PairTable:
    """The train split's pairs: image rows in the image cache, tokenised captions, where flips are allowed."""
    return PairTable(image_rows=np.array([cache.index_of(i) for i in train_df["image_id"]], dtype=np.int64),
                     input_ids=ids, padding_mask=mask, flip_ok=flip_allowed_mask(captions, flip), groups=groups)


def loader_workers(cfg: TrainConfig, device: torch.device) -> int:
    """Data-loader worker processes: --workers (at most the cores), else none on the CPU and up to 8 (half the
    cores) with CUDA."""
    if cfg.workers is not None:
        return min(max(0, int(cfg.workers)), default_workers())  # more workers than cores only slow each step down
    if device.type != "cuda":
        return 0
    return max(1, min(8, default_workers() // 2))
