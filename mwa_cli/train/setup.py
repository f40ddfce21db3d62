"""Everything a training run needs before its first step, built in one place.

`setup_run(config, progress, t_start) -> RunSetup` reads as its steps: resolve the configuration (a new run's
validated copy, or a resumed run's own; the caller's `TrainConfig` is never changed), start the process (device,
ranks, precision, seed), read the data dir, build the model and method, cache the images, extend the vocabulary,
load the splits, pick the learning rate, build the `Trainer` and batches, open the run folder and its config.json,
restore a checkpoint's state, and set up the step limit, step plan, budget planner and best-checkpoint keeper.
Each step returns a small frozen value; `train/loop.py` runs the loop over the result.

The smaller pieces (`train_pairs`, `default_batch_size`, `loader_workers`) are shared with the full fine-tuning
step measurement of `train/estimate.py`.
"""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from mwa_cli.data.cache import ProgressCallback, default_workers
from mwa_cli.errors import ConfigError, DataError
from mwa_cli.models.text_pad import padding_is_free
from mwa_cli.runtime import resolve_device, resolve_precision
from mwa_cli.train import checkpoint as ckpt_mod
from mwa_cli.train.batch_probe import find_max_batch
from mwa_cli.train.budget import BudgetPlanner, end_of_run
from mwa_cli.train.clocks import RunClocks
from mwa_cli.train.compile_policy import budget_too_short, compile_setting, short_budget_note, step_graph_setting
from mwa_cli.train.config import TrainConfig, config_from_run, default_steps
from mwa_cli.train.config_record import ConfigRecord
from mwa_cli.train.data import PairTable, TrainBatches, flip_allowed_mask
from mwa_cli.train.early_stop import BestKeeper
from mwa_cli.train.measure import device_name
from mwa_cli.train.metric_sinks import attach_sinks
from mwa_cli.train.positives import PositiveGroups, resolve_positives
from mwa_cli.train.run_dir import RunDir, base_config_record, default_run_name
from mwa_cli.train.step_plan import StepPlan
from mwa_cli.train.trainer import Trainer, cuda_setup, seed_everything

if TYPE_CHECKING:
    import pandas as pd

    from mwa_cli.adapters.applied import AppliedMethod
    from mwa_cli.data.cache import ImageCache
    from mwa_cli.eval.evaluate import SplitData
    from mwa_cli.models.base import BackboneInfo
    from mwa_cli.models.beit3 import BEiT3Retrieval
    from mwa_cli.models.hf import HFTokenizer
    from mwa_cli.models.tokenizer import Beit3Tokenizer
    from mwa_cli.train.dist.context import DistContext

    Tokenizer = Beit3Tokenizer | HFTokenizer

CPU_AUTO_BATCH = 32
GPU_DEFAULT_BATCH = 128
AUTO_BATCH_CAP = 256

ProgressFn = Callable[[str, dict], None]


# ---------------------------------------------------------------------------------------------- the steps' values
@dataclass(frozen=True)
class RunRequest:
    """What `train(config)` asks for: a new run's validated copy of `config`, or a resumed run's own config."""
    cfg: TrainConfig
    command: str  # the command line config.json records
    run: RunDir | None = None  # a resumed run's folder
    resume_state: dict | None = None  # its checkpoint's state
    checkpoint: Path | None = None  # the checkpoint folder it resumes from
    saved: dict = field(default_factory=dict)  # its config.json

    @property
    def resuming(self) -> bool:
        return self.resume_state is not None


@dataclass(frozen=True)
class RunEnv:
    """Where the run runs: ranks, device, precision, and the progress function (rank 0 alone shows progress)."""
    dctx: DistContext  # world size 1 in a single process
    device: torch.device
    precision: str
    progress: ProgressFn | None

    def message(self, text: str) -> None:
        """Say a line to the user (a "message" progress event)."""
        say(self.progress, text)

    def emit(self, event: str, data: dict) -> None:
        """A progress event (nothing without a progress function)."""
        if self.progress is not None:
            self.progress(event, data)


@dataclass(frozen=True)
class DataSource:
    """The data dir as read: its manifest and dataset hash."""
    data_dir: Path
    manifest: pd.DataFrame
    dataset_hash: str | None


@dataclass(frozen=True)
class Backbone:
    """The model with the method applied, and what built it."""
    model: BEiT3Retrieval
    binfo: BackboneInfo
    applied: AppliedMethod
    image_size: int
    text_len: int


@dataclass(frozen=True)
class TrainSplit:
    """The train split's rows, captions and contrastive positives."""
    frame: pd.DataFrame
    captions: list[str]
    positives: PositiveGroups


@dataclass(frozen=True)
class VocabSetup:
    """The vocabulary extension as `adapters.vocab.setup_for_training` decided it."""
    table: dict | None  # the added tokens (None: no extension)
    notes: list[str]  # lines to say
    record: dict  # config.json's vocab_extension
    lr: float | None  # the method lr to use instead of --lr or the default, or None


@dataclass(frozen=True)
class RunData:
    """The data as the model sees it: tokenizer, image cache, train pairs, the val and final splits."""
    data_dir: Path
    tok: Tokenizer
    cache: ImageCache
    pairs: PairTable
    val: SplitData | None
    test: SplitData  # the final split
    final_split: str
    identity: dict  # method, backbone, dataset hash: stamped on every evaluation


@dataclass(frozen=True)
class Training:
    """The trainer, its global batch size and batches, and the parameter counts."""
    trainer: Trainer
    batch_size: int
    batch_auto: bool  # the batch size was resolved, not given
    batches: TrainBatches
    use_cache: bool  # --feature-cache: train from cached hidden states of the frozen layers
    trainable_params: int
    total_params: int


@dataclass(frozen=True)
class RunFolder:
    """The run folder, its config.json record, and the command that resumes it."""
    run: RunDir  # a `NullRunDir` on ranks > 0
    config: ConfigRecord
    resume_cmd: str


@dataclass(frozen=True)
class RunSetup:
    """What a training run needs, as `setup_run` built it. Ranks > 0 have no progress and a `NullRunDir`.

    `plan` (the step total), `clocks` (time totals), `planner` and `keeper` are the run's changing state: the loop
    moves them in place, so each value lives in one object."""
    cfg: TrainConfig  # the resolved copy: learning rate and run name filled in
    env: RunEnv
    backbone: Backbone
    data: RunData
    training: Training
    folder: RunFolder
    resume_state: dict | None
    limit: int | None  # --steps/--epochs as steps (0 when the method trains nothing)
    budget_s: float | None
    plan: StepPlan
    clocks: RunClocks
    planner: BudgetPlanner
    keeper: BestKeeper


# ---------------------------------------------------------------------------------------------- the setup
def setup_run(config: TrainConfig, progress: ProgressFn | None, t_start: float) -> RunSetup:
    """Build what the run of `config` needs (see the module docstring); `t_start` starts the budget clock."""
    request = _resolve_config(config, progress)
    env = _start_process(request, progress)
    cfg = request.cfg
    source = _read_data_dir(request)
    backbone = _build_model(request, env)
    tok = _tokenizer(backbone)
    cache = _image_cache(source.data_dir, backbone.image_size, env)
    split = _train_split(cfg, source)
    default_lr = _default_lr(cfg, backbone, split)
    vocab = _extend_vocab(request, backbone, tok, split, default_lr)
    if vocab.table is not None:
        tok = _tokenizer(backbone, extended=True)
    data = _load_splits(cfg, source, backbone, tok, cache, split)
    _say_setup_notes(request, env, backbone, split, vocab)
    cfg = replace(cfg, lr=_learning_rate(request, env, backbone, split, vocab, default_lr))
    training = _build_training(cfg, env, backbone, data)
    cfg = _with_run_name(cfg, request)
    folder = _open_run_folder(cfg, request, env, backbone, source, split, vocab, training)
    state = request.resume_state  # None for a new run
    if state is not None:
        _restore_checkpoint(state, env, training, folder.run)
    clocks = RunClocks(t_start, env.dctx.world_size, saved=state.get("acc") if state is not None else None)
    limit = _step_limit(cfg, env, training, split, len(data.pairs))
    plan = _step_plan(cfg, training.trainer, limit, state)
    planner = _budget_planner(cfg, env, data, training, backbone, folder, clocks, state)
    keeper = _best_keeper(cfg, data, training, state)
    _announce(cfg, env, backbone, data, training, folder, plan, clocks)
    attach_sinks(folder.run, cfg.log, batch_size=training.batch_size,  # --log tensorboard
                 resumed_at=training.trainer.step_count if state is not None else None)
    if env.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(env.device)
    return RunSetup(cfg=cfg, env=env, backbone=backbone, data=data, training=training, folder=folder,
                    resume_state=state, limit=limit, budget_s=cfg.budget_s, plan=plan, clocks=clocks,
                    planner=planner, keeper=keeper)


def _resolve_config(config: TrainConfig, progress: ProgressFn | None) -> RunRequest:
    """A new run's validated copy of `config`, or a resumed run's own config with its checkpoint."""
    from mwa_cli.train.dist.env import user_command

    if not config.resume:
        cfg = replace(config).validate()  # a copy: the caller's config stays as given
        if not cfg.data_dir:
            raise ConfigError("no data directory given", hint="mwa train DATA_DIR --method mwa --budget 2h")
        return RunRequest(cfg=cfg, command=cfg.command or user_command() or command_line())
    run = RunDir(resolve_run_path(config.resume, config.out))
    saved = run.read_config()
    cfg = replace(config_from_run(saved, str(run.config_path)), resume=str(run.path))
    if "positives" not in saved:  # started before multi-positive targets existed: keep its loss
        cfg = replace(cfg, positives="off")
    if (run.path / "adapter_model.safetensors").is_file() and (run.path / "eval.json").is_file():
        raise ConfigError(f"{run.path} has already finished: nothing to resume",
                          hint=f"evaluate it with `mwa eval {run.path}`, or start a new run with another --name")
    found = ckpt_mod.resume_checkpoint(run.path, warn=lambda text: emit(progress, "message",
                                                                         {"text": f"warning: {text}"}))
    if found is None:
        raise ConfigError(f"{run.path} has no checkpoint to resume from",
                          hint="the run stopped before its first checkpoint: start it again")
    used, resume_state = found
    return RunRequest(cfg=cfg, command=saved.get("command", ""), run=run, resume_state=resume_state, checkpoint=used,
                      saved=saved)


def _start_process(request: RunRequest, progress: ProgressFn | None) -> RunEnv:
    """Device, ranks (torchrun), precision and seed; a resumed run's folder is locked and its checkpoint settled."""
    from mwa_cli.train.dist.context import init_from_env  # torchrun ranks (a no-op context in a single process)

    cfg = request.cfg
    dctx = init_from_env(resolve_device(cfg.device))  # world size 1 unless started by torchrun
    if request.run is not None and request.checkpoint is not None and dctx.is_main:
        request.run.lock()  # before anything is written: a second `mwa train --resume` of the same run is refused
        ckpt_mod.settle(request.run.path, request.checkpoint)  # resumed from becomes `last`, the other one goes
    precision = resolve_precision(cfg.precision, dctx.device)
    cuda_setup(dctx.device)
    seed_everything(cfg.seed)
    return RunEnv(dctx=dctx, device=dctx.device, precision=precision,
                  progress=progress if dctx.is_main else None)  # rank 0 alone shows progress and writes files


def _read_data_dir(request: RunRequest) -> DataSource:
    """The manifest and dataset hash; a resumed run refuses data that changed since it started."""
    from mwa_cli.data.manifest import load_dataset_info, load_manifest

    data_dir = Path(request.cfg.data_dir).resolve()
    manifest = load_manifest(data_dir)
    dataset_hash = load_dataset_info(data_dir).get("dataset_hash")
    saved_hash = request.saved.get("dataset_hash")
    if request.resuming and saved_hash and saved_hash != dataset_hash:
        raise DataError(f"the data in {data_dir} changed since this run started (dataset hash differs)",
                        hint="resume with the same data dir, or start a new run")
    return DataSource(data_dir=data_dir, manifest=manifest, dataset_hash=dataset_hash)


def _build_model(request: RunRequest, env: RunEnv) -> Backbone:
    """The backbone with its weights and the method applied; a new run refuses a backbone without weights, a
    resumed one keeps what it started with."""
    from mwa_cli.adapters.registry import apply_method
    from mwa_cli.models.presets import build_backbone, random_on_purpose, require_weights

    cfg = request.cfg
    weights = (require_weights(cfg.backbone, cfg.weights) if not request.resuming
               else None if random_on_purpose(cfg.weights) else cfg.weights)
    model, binfo = build_backbone(cfg.backbone, weights, drop_path=cfg.drop_path, tokenizer=cfg.tokenizer,
                                  device=env.device)
    applied = apply_method(model, cfg.method, cfg.method_options)
    return Backbone(model=model, binfo=binfo, applied=applied, image_size=int(model.config.img_size),
                    text_len=int(cfg.text_len or model.config.text_len))


def _tokenizer(backbone: Backbone, *, extended: bool = False) -> Tokenizer:
    """The backbone's tokenizer; `extended`: with the model's vocabulary extension."""
    from mwa_cli.models.run_tokenizer import load_tokenizer

    return load_tokenizer(backbone.binfo.tokenizer_path, backbone.text_len, model=backbone.model if extended else None)


def _image_cache(data_dir: Path, image_size: int, env: RunEnv) -> ImageCache:
    """The data dir's image cache at the model's size; rank 0 builds a missing one first."""
    from mwa_cli.data.cache import ensure_cache

    dctx = env.dctx
    if dctx.enabled and not dctx.is_main:
        dctx.barrier()
    cache = ensure_cache(data_dir, image_size, progress=images_progress(env.progress,
                                                                        f"caching {image_size}px images"))
    if dctx.enabled and dctx.is_main:
        dctx.barrier()
    return cache


def _train_split(cfg: TrainConfig, source: DataSource) -> TrainSplit:
    """The train split (refused when empty, unless the method trains nothing) and its positives."""
    df = source.manifest
    frame = df[df["split"] == "train"]
    if len(frame) == 0 and cfg.method != "frozen":
        raise DataError(f"the train split of {source.data_dir} is empty",
                        hint="re-run `mwa prepare` with more photos")
    captions = list(frame["caption"])
    positives = resolve_positives(cfg.positives, captions, [str(x or "") for x in frame["label"]])
    return TrainSplit(frame=frame, captions=captions, positives=positives)


def _default_lr(cfg: TrainConfig, backbone: Backbone, split: TrainSplit) -> float:
    """The method's default rate on this backbone; captions that are mostly repeats (class-folder templates) have
    their own (method modules)."""
    from mwa_cli.adapters.registry import recommended_lr

    return recommended_lr(backbone.binfo.name, cfg.method, templated=split.positives.templated)


def _extend_vocab(request: RunRequest, backbone: Backbone, tok: Tokenizer, split: TrainSplit,
                  default_lr: float) -> VocabSetup:
    """The vocabulary extension (adapters/vocab.py), attached to the model before the optimizer is built."""
    from mwa_cli.adapters.vocab import setup_for_training

    cfg = request.cfg
    table, notes, record, lr = setup_for_training(
        backbone.model, backbone.applied, tok, split.captions, cfg.extend_vocab, resuming=request.resuming,
        init=cfg.extend_vocab_init, peak_lr=cfg.extend_vocab_lr, method_lr=cfg.lr, default_lr=default_lr,
        resumed=request.saved.get("token_additions") if request.resuming else None)
    return VocabSetup(table=table, notes=notes, record=record, lr=lr)


def _load_splits(cfg: TrainConfig, source: DataSource, backbone: Backbone, tok: Tokenizer, cache: ImageCache,
                 split: TrainSplit) -> RunData:
    """The train pairs (captions tokenised), the val split when there is one, and the final split (refused when
    empty)."""
    from mwa_cli.eval.evaluate import load_split

    df, data_dir, final_split = source.manifest, source.data_dir, cfg.final_split
    ids, mask = tok.encode_batch(split.captions)
    pairs = train_pairs(cache, split.frame, ids, mask, split.captions, cfg.flip, split.positives.groups)
    val = load_split(data_dir, "val", cache) if (df["split"] == "val").any() else None
    if not (df["split"] == final_split).any():
        raise DataError(f"the {final_split} split of {data_dir} is empty: nothing to evaluate the run on",
                        hint="re-run `mwa prepare` with a non-empty test split")
    test = load_split(data_dir, final_split, cache)
    identity = {"method": cfg.method, "backbone": backbone.binfo.name, "dataset_hash": source.dataset_hash}
    return RunData(data_dir=data_dir, tok=tok, cache=cache, pairs=pairs, val=val, test=test, final_split=final_split,
                   identity=identity)


def _say_setup_notes(request: RunRequest, env: RunEnv, backbone: Backbone, split: TrainSplit,
                     vocab: VocabSetup) -> None:
    """The vocabulary extension's lines, then what the options chose that the user may not expect."""
    from mwa_cli.models.presets import NO_WEIGHTS, random_on_purpose

    cfg, positives = request.cfg, split.positives
    for note in vocab.notes:
        env.message(note)
    if cfg.workers is not None and cfg.workers > (cores := default_workers()):
        env.message(f"--workers {cfg.workers}: this machine has {cores} CPU cores, so {cores} data loader workers "
                    "are used (more only slow every step down)")
    if random_on_purpose(cfg.weights) and not request.resuming:
        env.message(f"warning: --weights {NO_WEIGHTS}: {backbone.binfo.name} starts from random weights; its recall "
                    "says nothing about the pretrained model")
    if cfg.positives == "auto" and positives.mode == "caption" and not request.resuming:
        env.message(f"the {positives.pairs} train captions hold only {positives.distinct_captions} distinct texts: "
                    "pairs with the same caption are positives of each other (--positives caption; --positives label "
                    "groups by label, --positives off turns it off)")


def _learning_rate(request: RunRequest, env: RunEnv, backbone: Backbone, split: TrainSplit, vocab: VocabSetup,
                   default_lr: float) -> float:
    """--lr, else the vocabulary extension's cap, else the default rate (said when it is the templated one)."""
    from mwa_cli.adapters.registry import recommended_lr

    cfg, positives, name = request.cfg, split.positives, backbone.binfo.name
    lr = vocab.lr if vocab.lr is not None else cfg.lr
    if lr is not None:
        return lr
    if default_lr != recommended_lr(name, cfg.method) and not request.resuming:
        env.message(f"learning rate {default_lr:g}, the default of {cfg.method} on {name} for captions that are "
                    f"mostly repeats ({positives.distinct_captions} distinct texts in {positives.pairs} train pairs; "
                    f"{recommended_lr(name, cfg.method):g} on varied captions); --lr sets it")
    return default_lr


def _build_training(cfg: TrainConfig, env: RunEnv, backbone: Backbone, data: RunData) -> Training:
    """The `Trainer`, the global batch size, the feature cache's checks and the train batches."""
    model, applied, device = backbone.model, backbone.applied, env.device
    use_cache = cfg.feature_cache != "off" and applied.trainable_params() > 0
    name = backbone.binfo.name
    compile_args = (cfg.compile, cfg.compile_mode, cfg.method, device.type, cfg.budget_s, name)
    if cfg.budget_s is not None and budget_too_short(cfg.compile, device.type, cfg.budget_s, name):
        env.message(short_budget_note(cfg.budget_s, name))
    trainer = Trainer(model, applied, device=device, precision=env.precision, lr=cfg.lr, min_lr=cfg.min_lr,
                      warmup_frac=cfg.warmup_frac, weight_decay=cfg.weight_decay, layer_decay=cfg.layer_decay,
                      micro_batch=cfg.micro_batch, on_message=env.message, distributed=env.dctx.enabled,
                      compile=False if use_cache else compile_setting(*compile_args),  # cache: compiled after its fill
                      cuda_graph=step_graph_setting(*compile_args))
    trainer.schedule.kind = cfg.schedule_kind
    batch_size, batch_auto = _resolve_batch_size(cfg, trainer, env, len(data.pairs), backbone.text_len)
    if use_cache:
        _check_feature_cache(cfg, backbone)
        trainer.use_feature_cache(applied.lowest_trainable_layer)
    batches = TrainBatches(data.pairs, data.data_dir, backbone.image_size, len(data.cache.ids), max(1, batch_size),
                           cfg.seed, crop_scale_min=cfg.crop_scale_min, rank=env.dctx.rank,
                           world_size=env.dctx.world_size, augment=not use_cache, load_images=not use_cache,
                           trim_text=padding_is_free(model))
    return Training(trainer=trainer, batch_size=batch_size, batch_auto=batch_auto, batches=batches,
                    use_cache=use_cache, trainable_params=applied.trainable_params(),
                    total_params=applied.total_params())


def _check_feature_cache(cfg: TrainConfig, backbone: Backbone) -> None:
    """--feature-cache needs a BEiT-3 backbone and frozen layers below every trainable one."""
    if not hasattr(backbone.model, "image_hidden"):  # the cache stores BEiT-3 hidden states between layers
        raise ConfigError(f"--feature-cache works with BEiT-3 backbones only, not {backbone.binfo.name}",
                          hint="train without --feature-cache")
    if backbone.applied.lowest_trainable_layer < 1:
        raise ConfigError(f"--feature-cache needs frozen layers below the adapters; method {cfg.method} with "
                          f"these options trains the lowest layer (or the embeddings)",
                          hint="adapt only the top layers, e.g. --option layers=top-4 (and no --extend-vocab)")


def _with_run_name(cfg: TrainConfig, request: RunRequest) -> TrainConfig:
    """A new run's name: --name, else rank 0's default (the method, backbone and time)."""
    from mwa_cli.train.dist.rank0 import on_main

    if request.resuming:
        return cfg
    return replace(cfg, name=on_main(lambda: cfg.name or default_run_name(cfg.method, cfg.backbone)))


def _open_run_folder(cfg: TrainConfig, request: RunRequest, env: RunEnv, backbone: Backbone, source: DataSource,
                     split: TrainSplit, vocab: VocabSetup, training: Training) -> RunFolder:
    """A new run's folder with its config.json written (rank 0), or a resumed run's with its record read."""
    from mwa_cli.train.dist.handoff import write_result
    from mwa_cli.train.dist.rank0 import NullRunDir, on_main

    dctx = env.dctx
    if request.run is None:
        name = cfg.name
        run = on_main(lambda: RunDir.create(cfg.out, name))
    else:
        run = request.run
    if not dctx.is_main:
        run = NullRunDir(run.path)
    if request.run is None:
        config = ConfigRecord(run, _config_record(cfg, request, env, backbone, source, split, vocab, training))
        config.write()
    else:
        config = ConfigRecord(run, run.read_config())
    resume_cmd = f"mwa train --resume {shlex.quote(str(run.path))}" + (
        f" --devices {dctx.world_size}" if dctx.enabled else "")
    write_result({"run_dir": str(run.path), "status": "running"})  # for the launcher's failure message
    return RunFolder(run=run, config=config, resume_cmd=resume_cmd)


def _config_record(cfg: TrainConfig, request: RunRequest, env: RunEnv, backbone: Backbone, source: DataSource,
                   split: TrainSplit, vocab: VocabSetup, training: Training) -> dict:
    """A new run's config.json: the resolved options, what setup chose, and where the data and backbone are from."""
    binfo, dctx, positives, batch_size = backbone.binfo, env.dctx, split.positives, training.batch_size
    auto_fields = (["lr"] if request.cfg.lr is None and vocab.lr is None else []) + (
        ["batch_size"] if training.batch_auto else [])
    record = cfg.to_dict()
    record.update(batch_size=batch_size, precision=env.precision, device=env.device.type, text_len=backbone.text_len,
                  method_options=backbone.applied.options, auto_resolved=auto_fields, positives=positives.mode,
                  positives_detail=positives.record())
    if cfg.tokenizer is None:
        record["tokenizer"] = binfo.tokenizer_path
    record.update(token_additions=vocab.table, vocab_extension=vocab.record)
    cfg_record = base_config_record(record, data_dir=str(source.data_dir), dataset_hash=source.dataset_hash,
                                    command=request.command)
    cfg_record["backbone_info"] = {"name": binfo.name, "weights_sha256": binfo.weights_sha256}
    if dctx.enabled:
        cfg_record["distributed"] = {"world_size": dctx.world_size, "backend": dctx.backend,
                                     "batch_per_device": batch_size // dctx.world_size}
    return cfg_record


def _restore_checkpoint(state: dict, env: RunEnv, training: Training, run: RunDir) -> None:
    """A resumed run's trainer and RNG as its checkpoint left them (metrics logged after it dropped), on this
    run's number of devices."""
    trainer = training.trainer
    trainer.load_state_dict(state["trainer"])
    run.truncate_metrics(trainer.step_count)
    ckpt_mod.set_rng_state(state["rng"])
    env.message(f"resuming {run.path} at step {trainer.step_count} of {int(state['total_steps'])}")
    saved_w, world_size = int(state.get("world_size", 1)), env.dctx.world_size
    if saved_w == world_size:
        return
    # another number of devices keeps the global batch: the per-device micro-batch follows
    if trainer.micro_batch:  # the checkpoint holds the per-device micro-batch of its own device count
        trainer.micro_batch = max(1, trainer.micro_batch * saved_w // world_size)
    env.message(f"continuing on {world_size} device(s) a run that ran on {saved_w}: the data order is global, "
                f"so every step still sees the same global batch of {training.batch_size}")


def _step_limit(cfg: TrainConfig, env: RunEnv, training: Training, split: TrainSplit, n_pairs: int) -> int | None:
    """--steps/--epochs as steps (whichever ends first), the default without any length, 0 when nothing trains."""
    spe = training.batches.steps_per_epoch
    limit = None
    if cfg.steps is not None:
        limit = int(cfg.steps)
    if cfg.epochs is not None:
        e_steps = max(1, int(round(cfg.epochs * spe)))
        limit = e_steps if limit is None else min(limit, e_steps)
    if limit is None and cfg.budget_s is None:
        limit, how = default_steps(split.positives.templated, n_pairs, spe)
        env.message(f"no --budget, --epochs or --steps: training {limit} steps ({how})")
    if not training.trainer.trains:
        limit = 0
        env.message(f"method {cfg.method} trains nothing: evaluating the backbone as it is")
    return limit


def _step_plan(cfg: TrainConfig, trainer: Trainer, limit: int | None, resume_state: dict | None) -> StepPlan:
    """A resumed run's plan as saved; a new run's limit, final unless a budget must measure the step time first.
    The schedule is fitted to it (a budget run's to the limit or 100 000 steps until its plan is made)."""
    if resume_state is not None:
        return StepPlan(total_steps=int(resume_state["total_steps"]), planned=bool(resume_state.get("planned")))
    total_steps = limit if limit is not None else 0
    if cfg.budget_s is None or not trainer.trains:
        trainer.schedule.fit(max(1, total_steps))
        return StepPlan(total_steps=total_steps, planned=True)
    trainer.schedule.fit(limit or 100_000)
    return StepPlan(total_steps=total_steps, planned=False)


def _budget_planner(cfg: TrainConfig, env: RunEnv, data: RunData, training: Training, backbone: Backbone,
                    folder: RunFolder, clocks: RunClocks, resume_state: dict | None) -> BudgetPlanner:
    """The budget planner (also the validation-check schedule without a budget), resumed where it was."""
    val, test = data.val, data.test
    planner = BudgetPlanner(budget_s=cfg.budget_s, deadline=clocks.deadline(cfg.budget_s),
                            val_items=(val.n_images + val.n_captions) if val else 0,
                            final_items=test.n_images + test.n_captions, val_evals=cfg.val_evals if val else 0,
                            checkpoint_every=cfg.checkpoint_every, checkpoint_minutes=cfg.checkpoint_minutes,
                            batch_size=max(1, training.batch_size), val_share=cfg.val_share)
    # the last checkpoint, published weights, final model build
    probe = folder.run.path if cfg.budget_s is not None and env.dctx.is_main else None
    planner.end = end_of_run(training.trainer, backbone.binfo.build_s, probe_dir=probe)
    if resume_state is not None:
        planner.load_state(resume_state.get("planner"))
    return planner


def _best_keeper(cfg: TrainConfig, data: RunData, training: Training, resume_state: dict | None) -> BestKeeper:
    """The best validation checkpoint's keeper (early stopping when patience is on), resumed where it was."""
    keeper = BestKeeper(patience=cfg.patience_checks if data.val is not None and training.trainer.trains else 0)
    if resume_state is not None:
        keeper.load_state_dict(resume_state.get("best"))
    return keeper


def _announce(cfg: TrainConfig, env: RunEnv, backbone: Backbone, data: RunData, training: Training,
              folder: RunFolder, plan: StepPlan, clocks: RunClocks) -> None:
    """The "setup" progress event: what runs where, how large, for how long."""
    from mwa_cli.adapters.vocab import extension_params

    trainer, batch_size, deadline = training.trainer, training.batch_size, clocks.deadline(cfg.budget_s)
    env.emit("setup", {"run_dir": str(folder.run.path), "method": cfg.method, "backbone": backbone.binfo.name,
                       "device": device_name(env.device), "precision": env.precision, "batch_size": batch_size,
                       "micro_batch": trainer.micro_batch or batch_size, "train_pairs": len(data.pairs),
                       "steps_per_epoch": training.batches.steps_per_epoch,
                       "trainable_params": training.trainable_params, "total_params": training.total_params,
                       "vocab_extension_params": extension_params(backbone.model),
                       "budget_s": cfg.budget_s, "total_steps": plan.shown(),
                       "budget_left_s": None if deadline is None else deadline - time.monotonic()})


# ---------------------------------------------------------------------------------------------- shared pieces
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


def _resolve_batch_size(cfg: TrainConfig, trainer: Trainer, env: RunEnv, n_pairs: int, text_len: int
                        ) -> tuple[int, bool]:
    """(the global batch size, whether it was resolved rather than given): `--batch-size`, its default, or
    `auto`, capped by the training pairs and split over the ranks; sets the trainer's micro-batch to match."""
    from mwa_cli.train.dist.sharding import check_batch_split

    device, dctx, message = env.device, env.dctx, env.message
    batch_size = cfg.batch_size
    micro = cfg.micro_batch
    auto = batch_size is None or batch_size == "auto"
    if batch_size is None:  # the same default for every method keeps comparisons fair
        batch_size = default_batch_size(device)
    elif batch_size == "auto":
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
    return batch_size, auto


def default_batch_size(device: torch.device) -> int:
    """The batch size without --batch-size: the same for every method, which keeps comparisons fair."""
    return GPU_DEFAULT_BATCH if device.type == "cuda" else CPU_AUTO_BATCH


def train_pairs(cache: ImageCache, train_df: pd.DataFrame, ids: torch.Tensor, mask: torch.Tensor, captions: list[str],
                flip: str, groups: np.ndarray | None = None) -> PairTable:
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
