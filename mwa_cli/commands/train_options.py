"""The options of `mwa train`, declared once as `Annotated` types: the command's signature names them, and each
help's default is read from TrainConfig, where the default is declared."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from mwa_cli.adapters.registry import names as method_names  # torch-free: the help lists every method
from mwa_cli.commands.common import choices
from mwa_cli.train.compile_policy import COMPILE_MODES
from mwa_cli.train.config import (
    DEFAULT_EPOCHS,
    DEVICES,
    EXTEND_VOCAB_MODES,
    FEATURE_CACHE_MODES,
    FLIP_MODES,
    POSITIVE_MODES,
    PRECISIONS,
    SCHEDULES,
    TEMPLATED_DEFAULT_EPOCHS,
    TEMPLATED_REFERENCE_BATCH,
    TrainConfig,
)
from mwa_cli.train.metric_sinks import LOG_MODES

_DEFAULTS = TrainConfig()

Precision = choices("Precision", PRECISIONS)
Device = choices("Device", DEVICES)
Flip = choices("Flip", FLIP_MODES)
FeatureCache = choices("FeatureCache", FEATURE_CACHE_MODES)
ExtendVocab = choices("ExtendVocab", EXTEND_VOCAB_MODES)
Positives = choices("Positives", POSITIVE_MODES)
Schedule = choices("Schedule", SCHEDULES)
CompileMode = choices("CompileMode", COMPILE_MODES)
LogMode = choices("LogMode", LOG_MODES)


def _default(field: str) -> str:
    """The help's '[default: X]', X read from TrainConfig."""
    value = getattr(_DEFAULTS, field)
    text = ("%g" % value).replace("e-0", "e-") if isinstance(value, float) else str(value)
    return f"\\[default: {text}]"


# What to train: data, method, backbone
DataDir = Annotated[Optional[Path], typer.Argument(help="Prepared data directory (from `mwa prepare`).")]
Method = Annotated[Optional[str], typer.Option("--method", "-m",
                                               help=f"{' | '.join(method_names())}. {_default('method')}")]
Backbone = Annotated[Optional[str], typer.Option(
    "--backbone", "-b", help="beit3-base | beit3-large | beit3-mini | preset | config .json | hf:<model id or dir> "
                             f"(CLIP, SigLIP, BLIP-2 retrieval) | blip2-itm-vit-g. {_default('backbone')}")]
Weights = Annotated[Optional[str], typer.Option(
    "--weights", help="Backbone weights: .pth/.safetensors path or URL (blip2-itm-vit-g: the model directory); "
                      "required for BEiT-3 Base/Large; `none`: random weights on purpose (testing only).")]

# How long: budget, epochs, steps
Budget = Annotated[Optional[str], typer.Option(
    "--budget", help="Wall-clock budget for the whole run: 2h, 90m, 1h30m, 3600s (\"2 hours\" and 2hours read as "
                     "2h; the parsed budget is printed).")]
Epochs = Annotated[Optional[float], typer.Option(
    "--epochs", help="Epochs (with --budget: whichever ends first). \\[default without --budget or --steps: "
                     f"{DEFAULT_EPOCHS}; {TEMPLATED_DEFAULT_EPOCHS} when the captions are mostly repeats, as class "
                     f"folders' are, and at least the steps of {TEMPLATED_DEFAULT_EPOCHS} epochs at batch "
                     f"{TEMPLATED_REFERENCE_BATCH}]")]
Steps = Annotated[Optional[int], typer.Option("--steps", help="Optimizer steps (with --budget: whichever first).")]

# Optimisation
BatchSize = Annotated[Optional[str], typer.Option(
    "--batch-size", help="Effective batch per step (same for every method: fair), or 'auto' (largest that fits on "
                         "the GPU; 32 on CPU). \\[default: 128 on GPU, 32 on CPU]")]
MicroBatch = Annotated[Optional[int], typer.Option("--micro-batch", help="Micro-batch for gradient accumulation.")]
Lr = Annotated[Optional[float], typer.Option(
    "--lr", help="Peak learning rate. \\[default: the backbone's recommended rate for the method: docs/decisions.md]")]
MinLr = Annotated[Optional[float], typer.Option("--min-lr", help=f"Final learning rate. {_default('min_lr')}")]
Warmup = Annotated[Optional[float], typer.Option("--warmup",
                                                 help=f"Warm-up share of the steps. {_default('warmup_frac')}")]
LayerDecay = Annotated[Optional[float], typer.Option("--layer-decay",
                                                     help=f"Layer-wise lr decay. {_default('layer_decay')}")]
WeightDecay = Annotated[Optional[float], typer.Option("--weight-decay",
                                                      help=f"AdamW weight decay. {_default('weight_decay')}")]
DropPath = Annotated[Optional[float], typer.Option("--drop-path",
                                                   help=f"Stochastic depth rate. {_default('drop_path')}")]

# Machine and data handling
PrecisionOption = Annotated[Optional[Precision], typer.Option(
    "--precision", help="auto | bf16 | fp16 | fp32 (auto: bf16 on GPU, fp32 on CPU).")]
DeviceChoice = Annotated[Optional[Device], typer.Option("--device", help="auto | cuda | cpu.")]
Workers = Annotated[Optional[int], typer.Option("--workers",
                                                help="Data loader workers (auto: 0 on CPU, ≤8 on GPU).")]
FlipOption = Annotated[Optional[Flip], typer.Option(
    "--flip", help="Horizontal flip: auto (off for captions that say left/right, 左/右) | on | off.")]
FeatureCacheOption = Annotated[Optional[FeatureCache], typer.Option(
    "--feature-cache", help="off | auto | gpu | ram | disk: with adapters in the top layers only (--option "
                            "layers=top-K), compute the frozen layers' output once per image and caption and train "
                            "from it (faster epochs; turns random crop and flip off). "
                            f"{_default('feature_cache')}")]
ExtendVocabOption = Annotated[Optional[ExtendVocab], typer.Option(
    "--extend-vocab", help="auto | on | off: give characters the tokenizer maps to <unk> (e.g. Japanese kanji) new "
                           "token ids, trained with the adapter and saved with it (auto: on when > 2 % of the "
                           f"training captions' tokens are <unk>). {_default('extend_vocab')}")]
PositivesOption = Annotated[Optional[Positives], typer.Option(
    "--positives", help="auto | caption | label | off: which pairs count as positives of each other in the "
                        "contrastive loss (caption: identical caption text; label: same label). auto: caption when "
                        f"captions repeat in the train split (class folders), else off. {_default('positives')}")]
MethodOption = Annotated[Optional[List[str]], typer.Option(
    "--option", help="Method option KEY=VALUE (repeatable), e.g. rank=16; a key the method does not have is "
                     "refused with its list.")]

# The run folder and its seeds
Out = Annotated[Optional[str], typer.Option("--out", help=f"Folder of runs. {_default('out')}")]
Name = Annotated[Optional[str], typer.Option("--name", help="Run name \\[default: <method>-<backbone>-<time>].")]
Resume = Annotated[Optional[str], typer.Option("--resume", help="Continue an interrupted run (folder or name).")]
Seed = Annotated[Optional[int], typer.Option("--seed", help="Seed (model init, data order, augmentation).")]
Seeds = Annotated[Optional[int], typer.Option(
    "--seeds", help="Train this many runs, seeds --seed, --seed+1, … (folders <name>-s<seed>): the report groups "
                    "them, and its interval then holds the seed-to-seed spread, so it can tell training noise from "
                    "a difference.")]

# Validation checks and early stop
ValEvals = Annotated[Optional[int], typer.Option(
    "--val-evals", help="Exactly this many evenly spaced val checks during training (0: none). \\[default: "
                        "cost-aware, see --val-share]")]
ValShare = Annotated[Optional[float], typer.Option(
    "--val-share", help=f"Most of the wall time the cost-aware val checks may take. {_default('val_share')}")]
Patience = Annotated[Optional[int], typer.Option(
    "--patience", help="Stop after this many val checks in a row without a better val RSUM (0: never). \\[default: "
                       "4 with --budget, else 0]")]
ScheduleOption = Annotated[Optional[Schedule], typer.Option(
    "--schedule", help="Learning-rate schedule: auto | wsd (warm-up, stable, decay over the last 20 %) | cosine. "
                       "\\[default: auto = wsd with --budget, cosine otherwise]")]

# Logs and checkpoints
LogEvery = Annotated[Optional[int], typer.Option("--log-every",
                                                 help=f"Steps between metric rows. {_default('log_every')}")]
Log = Annotated[Optional[LogMode], typer.Option(
    "--log", help="Also write the curves (loss, learning rate, step time, memory, val recall) for TensorBoard, in "
                  f"RUN/tensorboard (needs mwa-cli\\[log]). {_default('log')}")]
CheckpointEvery = Annotated[Optional[int], typer.Option(
    "--checkpoint-every", help="Steps between checkpoints (0: every --checkpoint-minutes).")]
CheckpointMinutes = Annotated[Optional[float], typer.Option(
    "--checkpoint-minutes", help="Minutes between checkpoints (a Ctrl-C or SIGTERM also writes one). "
                                 f"{_default('checkpoint_minutes')}")]

# Compilation
Compile = Annotated[Optional[bool], typer.Option(
    "--compile/--no-compile", help="torch.compile the layers: faster steps after a compilation paid once per run "
                                   "(tens of seconds on a GPU, counted in the budget). \\[default: on with CUDA, off "
                                   "on the CPU]")]
CompileModeOption = Annotated[Optional[CompileMode], typer.Option(
    "--compile-mode", help="auto | default | reduce-overhead (CUDA graphs of each layer too) | graph (the whole "
                           "training step as one CUDA graph). auto: per method, the mode measured fastest on the GPU "
                           f"(docs/benchmarks.md). {_default('compile_mode')}")]

# The command's own options (not TrainConfig fields)
Devices = Annotated[Optional[str], typer.Option(
    "--devices", help="Train on several GPUs of this machine: a count (2), GPU ids (0,1) or all; DDP with one "
                      "process per device, --batch-size stays the global batch. With --device cpu: that many CPU "
                      "processes (gloo). Under an external torchrun, mwa uses its ranks.")]
ConfigFile = Annotated[Optional[Path], typer.Option("--config", help="JSON or TOML file with any of these options.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Only the final line (and errors).")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print the run result as JSON on stdout only.")]
