"""`mwa train`: thin Typer wrapper around mwa_cli.train.loop.train (options → TrainConfig → Rich progress)."""

from __future__ import annotations

import json
import os
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Optional

import typer

from mwa_cli.adapters.registry import names as method_names  # torch-free: the help lists every method
from mwa_cli.commands.common import (EXTRA_ARGS, TokenizerOption, choices, console, emit_json, err_console, guarded,
                                     refuse_extra_args)
from mwa_cli.errors import EXIT_SIGINT
from mwa_cli.train.compile_policy import COMPILE_MODES
from mwa_cli.train.config import (DEFAULT_EPOCHS, DEVICES, EXTEND_VOCAB_MODES, FEATURE_CACHE_MODES, FLIP_MODES, POSITIVE_MODES,
                                  PRECISIONS, SCHEDULES, TEMPLATED_DEFAULT_EPOCHS,
                                  TEMPLATED_REFERENCE_BATCH, TrainConfig)
from mwa_cli.train.metric_sinks import LOG_MODES

if TYPE_CHECKING:
    from mwa_cli.train.launcher import FailureReport

HELP = (
    'Train one method on a prepared data directory, within a wall-clock budget, and evaluate it.\n'
    '\n'
    'The budget covers the whole run (evaluations, checkpoints, final test evaluation, artefacts): the '
    'number of steps is refitted to the measured step time as training goes (start-up, warm-up and '
    'compilation count as spent time), so the run ends within a few percent of the budget. Every method '
    'uses the same data order, schedule shape, precision and effective batch, so runs compare fairly.\n'
    '\n'
    'Stop when done: the validation split is checked as often as keeps those checks within --val-share of '
    'the wall time (5 %); the adapter published is the best one seen (its step and val RSUM in timing.json), '
    'and under --budget the run stops once --patience checks in a row brought no improvement.\n'
    '\n'
    'Examples:\n'
    '\n'
    '  mwa train data --method mwa --budget 2h\n'
    '\n'
    '  mwa train data --method mwa --budget 2h --patience 0     (always use the whole budget)\n'
    '\n'
    '  mwa train data --method full-ft --backbone beit3-base --weights beit3_base_itc_patch16_224.pth '
    '--budget 2h\n'
    '\n'
    '  mwa train data --method nke --epochs 10 --batch-size 64 --lr 5e-4\n'
    '\n'
    '  mwa train data --method lora --option rank=16 --config train.toml\n'
    '\n'
    '  mwa train data --method mwa --option layers=top-4 --feature-cache auto --epochs 20\n'
    '\n'
    '  mwa train data --method mwa --budget 2h --no-compile   (eager layers: no compilation on the GPU)\n'
    '\n'
    '  mwa train data --method mwa --backbone blip2-itm-vit-g --weights models/blip2-itm-vit-g --budget 4h\n'
    '\n'
    '  mwa train data --method mwa --positives label   (class folders: same label = positive)\n'
    '\n'
    '  mwa train --resume runs/mwa-beit3-base-20260101-120000\n'
    '\n'
    '  mwa train data --method mwa --budget 2h --seeds 3 --name mwa-2h     (runs mwa-2h-s0, -s1, -s2)\n'
    '\n'
    'Writes runs/<name>/: config.json, metrics.jsonl, timing.json, eval.json (test split), '
    'eval_topk.json, adapter_model.safetensors + adapter_config.json, checkpoint/last/.\n'
    '\n'
    'Several GPUs: --devices 2 (or 0,1 or all) runs DistributedDataParallel, one process per device; '
    '--batch-size is the global batch (each GPU takes 1/N of it), negatives come from the whole global batch. '
    'On several machines start `torchrun --nnodes ... -m mwa_cli train ...` on each (see the README).\n'
    '\n'
    'Ctrl-C or SIGTERM: saves a resumable checkpoint at the next step, prints the resume command, exits '
    '130 / 143. Exit codes: 0 done; 2 invalid option; 3 unusable data; 5 (--devices) a training process '
    'stopped because another one failed; 6 a damaged checkpoint, adapter or manifest (its sha256 differs from '
    'the recorded one: the message names the file); 7 the loss or the weights became non-finite (last good '
    'checkpoint kept); 8 out of GPU memory even at micro-batch 1; 10 a full disk; 11 a folder that cannot be '
    'written; 12 out of memory (RAM); 1 a failure while loading data, or an unexpected internal error '
    '(docs/formats.md, "Exit codes").'
)


def _parse_options(items: list[str] | None) -> dict | None:
    if not items:
        return None
    from mwa_cli.errors import ConfigError

    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--option {item!r} is not KEY=VALUE", hint="e.g. --option rank=16 --option layers=top-4")
        key, value = item.split("=", 1)
        try:
            out[key.strip().replace("-", "_")] = json.loads(value)
        except ValueError:
            out[key.strip().replace("-", "_")] = value
    return out


_DEFAULTS = TrainConfig()
# Parameters of `mwa train` that are not TrainConfig fields: the command acts on them itself.
COMMAND_ONLY = ("config", "devices", "quiet", "json_out", "seeds")
# Parameters whose TrainConfig field has another name or form: parameter -> (field, conversion).
RENAMED = {"option": ("method_options", _parse_options)}

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
    """The help's '[default: X]', X read from TrainConfig, where the default is declared."""
    value = getattr(_DEFAULTS, field)
    text = ("%g" % value).replace("e-0", "e-") if isinstance(value, float) else str(value)
    return f"\\[default: {text}]"


def config_values(params: dict[str, Any]) -> dict[str, Any]:
    """TrainConfig's values from the command's parsed parameters (`ctx.params`); None where not given."""
    values: dict[str, Any] = {}
    for name, value in params.items():
        if name in COMMAND_ONLY:
            continue
        field, convert = RENAMED.get(name, (name, None))
        if convert is not None:
            value = convert(value)
        elif isinstance(value, Enum):
            value = value.value
        elif isinstance(value, Path):
            value = str(value)
        values[field] = value
    return values


def register(app: typer.Typer) -> None:
    @app.command("train", help=HELP, context_settings=EXTRA_ARGS)
    @guarded
    def train_cmd(
        ctx: typer.Context,
        data_dir: Optional[Path] = typer.Argument(None, help="Prepared data directory (from `mwa prepare`)."),
        method: Optional[str] = typer.Option(None, "--method", "-m", help=f"{' | '.join(method_names())}. "
                                                                          f"{_default('method')}"),
        backbone: Optional[str] = typer.Option(None, "--backbone", "-b",
                                               help="beit3-base | beit3-large | beit3-mini | preset | config .json | "
                                                    "hf:<model id or dir> (CLIP, SigLIP, BLIP-2 retrieval) | "
                                                    f"blip2-itm-vit-g. {_default('backbone')}"),
        weights: Optional[str] = typer.Option(None, "--weights", help="Backbone weights: .pth/.safetensors path or URL "
                                                                   "(blip2-itm-vit-g: the model directory); required "
                                                                   "for BEiT-3 Base/Large; `none`: random weights on "
                                                                   "purpose (testing only)."),
        tokenizer: TokenizerOption = None,
        budget: Optional[str] = typer.Option(None, "--budget", help="Wall-clock budget for the whole run: 2h, 90m, "
                                             "1h30m, 3600s (\"2 hours\" and 2hours read as 2h; the parsed budget is "
                                             "printed)."),
        epochs: Optional[float] = typer.Option(None, "--epochs", help="Epochs (with --budget: whichever ends first). \\[default without "
                                               f"--budget or --steps: {DEFAULT_EPOCHS}; {TEMPLATED_DEFAULT_EPOCHS} when "
                                               "the captions are mostly repeats, as class folders' are, and at "
                                               f"least the steps of {TEMPLATED_DEFAULT_EPOCHS} epochs at batch "
                                               f"{TEMPLATED_REFERENCE_BATCH}]"),
        steps: Optional[int] = typer.Option(None, "--steps", help="Optimizer steps (with --budget: whichever first)."),
        batch_size: Optional[str] = typer.Option(None, "--batch-size", help="Effective batch per step (same for every "
                                                 "method: fair), or 'auto' (largest that fits on the GPU; 32 on CPU)"
                                                 ". \\[default: 128 on GPU, 32 on CPU]"),
        micro_batch: Optional[int] = typer.Option(None, "--micro-batch", help="Micro-batch for gradient accumulation."),
        lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate. \\[default: the backbone's recommended rate for the method: docs/decisions.md]"),
        min_lr: Optional[float] = typer.Option(None, "--min-lr", help=f"Final learning rate. {_default('min_lr')}"),
        warmup_frac: Optional[float] = typer.Option(None, "--warmup",
                                                    help=f"Warm-up share of the steps. {_default('warmup_frac')}"),
        layer_decay: Optional[float] = typer.Option(None, "--layer-decay",
                                                    help=f"Layer-wise lr decay. {_default('layer_decay')}"),
        weight_decay: Optional[float] = typer.Option(None, "--weight-decay",
                                                     help=f"AdamW weight decay. {_default('weight_decay')}"),
        drop_path: Optional[float] = typer.Option(None, "--drop-path",
                                                  help=f"Stochastic depth rate. {_default('drop_path')}"),
        precision: Optional[Precision] = typer.Option(None, "--precision", help="auto | bf16 | fp16 | fp32 (auto: "
                                                      "bf16 on GPU, fp32 on CPU)."),
        device: Optional[Device] = typer.Option(None, "--device", help="auto | cuda | cpu."),
        workers: Optional[int] = typer.Option(None, "--workers", help="Data loader workers (auto: 0 on CPU, ≤8 on GPU)."),
        flip: Optional[Flip] = typer.Option(None, "--flip", help="Horizontal flip: auto (off for captions that say "
                                            "left/right, 左/右) | on | off."),
        feature_cache: Optional[FeatureCache] = typer.Option(
            None, "--feature-cache", help="off | auto | gpu | ram | disk: with adapters in the top layers only "
                                          "(--option layers=top-K), compute the frozen layers' output once per image "
                                          "and caption and train from it (faster epochs; turns random crop and flip "
                                          f"off). {_default('feature_cache')}"),
        extend_vocab: Optional[ExtendVocab] = typer.Option(
            None, "--extend-vocab", help="auto | on | off: give characters the tokenizer maps to <unk> (e.g. Japanese "
                                         "kanji) new token ids, trained with the adapter and saved with it (auto: on "
                                         "when > 2 % of the training captions' tokens are <unk>). "
                                         f"{_default('extend_vocab')}"),
        positives: Optional[Positives] = typer.Option(
            None, "--positives", help="auto | caption | label | off: which pairs count as positives of each other in "
                                      "the contrastive loss (caption: identical caption text; label: same label). "
                                      "auto: caption when captions repeat in the train split (class folders), else "
                                      f"off. {_default('positives')}"),
        option: Optional[List[str]] = typer.Option(None, "--option",
                                                   help="Method option KEY=VALUE (repeatable), e.g. rank=16; a "
                                                        "key the method does not have is refused with its list."),
        out: Optional[str] = typer.Option(None, "--out", help=f"Folder of runs. {_default('out')}"),
        name: Optional[str] = typer.Option(None, "--name", help="Run name \\[default: <method>-<backbone>-<time>]."),
        resume: Optional[str] = typer.Option(None, "--resume", help="Continue an interrupted run (folder or name)."),
        seed: Optional[int] = typer.Option(None, "--seed", help="Seed (model init, data order, augmentation)."),
        seeds: Optional[int] = typer.Option(None, "--seeds", help="Train this many runs, seeds --seed, --seed+1, … "
                                            "(folders <name>-s<seed>): the report groups them, and its interval then "
                                            "holds the seed-to-seed spread, so it can tell training noise from a "
                                            "difference."),
        val_evals: Optional[int] = typer.Option(None, "--val-evals", help="Exactly this many evenly spaced val checks "
                                                "during training (0: none). \\[default: cost-aware, see --val-share]"),
        val_share: Optional[float] = typer.Option(None, "--val-share", help="Most of the wall time the cost-aware val "
                                                  f"checks may take. {_default('val_share')}"),
        patience: Optional[int] = typer.Option(None, "--patience", help="Stop after this many val checks in a row "
                                               "without a better val RSUM (0: never). \\[default: 4 with --budget, "
                                               "else 0]"),
        schedule: Optional[Schedule] = typer.Option(None, "--schedule", help="Learning-rate schedule: auto | wsd "
                                                    "(warm-up, stable, decay over the last 20 %) | cosine. \\[default: "
                                                    "auto = wsd with --budget, cosine otherwise]"),
        log_every: Optional[int] = typer.Option(None, "--log-every",
                                                help=f"Steps between metric rows. {_default('log_every')}"),
        log: Optional[LogMode] = typer.Option(None, "--log", help="Also write the curves (loss, learning rate, step "
                                              "time, memory, val recall) for TensorBoard, in RUN/tensorboard "
                                              f"(needs mwa-cli\\[log]). {_default('log')}"),
        checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every",
                                                       help="Steps between checkpoints (0: every --checkpoint-minutes)."),
        checkpoint_minutes: Optional[float] = typer.Option(None, "--checkpoint-minutes",
                                                            help="Minutes between checkpoints (a Ctrl-C or SIGTERM "
                                                                 f"also writes one). {_default('checkpoint_minutes')}"),
        compile: Optional[bool] = typer.Option(
            None, "--compile/--no-compile", help="torch.compile the layers: faster steps after a compilation paid once "
                                                 "per run (tens of seconds on a GPU, counted in the budget). "
                                                 "\\[default: on with CUDA, off on the CPU]"),
        compile_mode: Optional[CompileMode] = typer.Option(
            None, "--compile-mode", help="auto | default | reduce-overhead (CUDA graphs of each layer too) | graph (the "
                                         "whole training step as one CUDA graph). auto: per method, the mode "
                                         "measured fastest on the GPU (docs/benchmarks.md). "
                                         f"{_default('compile_mode')}"),
        devices: Optional[str] = typer.Option(None, "--devices",
                                              help="Train on several GPUs of this machine: a count (2), GPU ids "
                                                   "(0,1) or all; DDP with one process per device, --batch-size stays "
                                                   "the global batch. With --device cpu: that many CPU processes "
                                                   "(gloo). Under an external torchrun, mwa uses its ranks."),
        config: Optional[Path] = typer.Option(None, "--config", help="JSON or TOML file with any of these options."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the final line (and errors)."),
        json_out: bool = typer.Option(False, "--json", help="Print the run result as JSON on stdout only."),
    ) -> None:
        refuse_extra_args(ctx.args, "--budget", budget, data_dir.name if data_dir else None)
        cli = config_values(ctx.params)
        if resume:
            ignored = sorted(k for k, v in cli.items() if v is not None and k not in ("resume", "out"))
            if (ignored or config) and not quiet:
                err_console.print(f"[yellow]note:[/] --resume continues the run with its own config.json; ignored: "
                                  f"{', '.join(ignored + (['config'] if config else []))}", highlight=False)
            cli = {"resume": resume, "out": out}
            config = None
        plan = [cli] if seeds is None else seed_runs(cli, seeds, config, resume=resume, devices=devices)
        from mwa_cli.train.dist.env import launched_by_mwa, under_torchrun
        from mwa_cli.train.dist.handoff import write_result

        if devices is not None and not under_torchrun():
            code = _launch_devices(devices, device, cli, config, resume, out)
            if code is not None:
                raise typer.Exit(code)
        rank_other = under_torchrun() and os.environ.get("RANK", "0") != "0"  # rank 0 alone talks
        launched = launched_by_mwa()  # workers exit 0; rank 0 leaves the exit code to the launcher
        results = []
        for one in plan:
            result = _train_one(one, config, quiet or json_out or rank_other, rank_other)
            results.append(result)
            if rank_other:
                raise typer.Exit(0 if launched else (result.exit_code if result.status != "completed" else 0))
            write_result({"exit_code": result.exit_code, "status": result.status, "run_dir": str(result.run_dir)})
            if result.status != "completed":
                break
            if not json_out:
                _print_done(result, quiet)
        if json_out:
            emit_json(results[0].to_dict() if seeds is None else [r.to_dict() for r in results])
        result = results[-1]
        if result.status == "completed":
            return
        if result.status == "interrupted":
            err_console.print(f"[yellow]{result.message}[/]", highlight=False)
        else:
            err_console.print(f"[bold red]error:[/] {result.message}", highlight=False)
        raise typer.Exit(0 if launched else result.exit_code)


def seed_runs(cli: dict, seeds: int, config: Path | None = None, *, resume: str | None = None,
              devices: str | None = None) -> list[dict]:
    """`--seeds N`: the options of each of the N runs (seed --seed + i, name <name>-s<seed>), refused with
    --resume and --devices."""
    from mwa_cli.errors import ConfigError
    from mwa_cli.train.config import resolve_config
    from mwa_cli.train.run_dir import default_run_name

    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, not {seeds}", hint="e.g. --seeds 3")
    if resume or devices is not None:
        raise ConfigError(f"--seeds cannot be combined with {'--resume' if resume else '--devices'}",
                          hint="resume each seed's run by its folder, or start one run per seed with --seed S")
    base = resolve_config(cli, config)  # the file's name and seed count too; its errors before any run starts
    name = base.name or default_run_name(base.method, base.backbone)
    return [dict(cli, seed=base.seed + i, name=f"{name}-s{base.seed + i}") for i in range(seeds)]


def _train_one(cli: dict, config: Path | None, quiet: bool, rank_other: bool):
    """One training run with its progress bars; a second Ctrl-C ends the command (exit 130)."""
    from mwa_cli.commands.progress import TrainProgress, second_interrupt_message
    from mwa_cli.errors import MwaError
    from mwa_cli.train.config import resolve_config
    from mwa_cli.train.loop import train

    progress = TrainProgress(quiet)
    try:
        cfg = resolve_config(cli, config)
        with progress:
            return train(cfg, progress, count_from_process_start=True)
    except MwaError as exc:
        if rank_other:  # rank 0 prints it
            raise typer.Exit(exc.exit_code) from None
        raise
    except KeyboardInterrupt:  # a second Ctrl-C: the trainer stopped at once, without a new checkpoint
        if rank_other:
            raise typer.Exit(EXIT_SIGINT) from None
        message, hint = second_interrupt_message(progress.run_dir)
        err_console.print(f"[yellow]{message}[/]", highlight=False)
        err_console.print(f"[yellow]hint:[/] {hint}", highlight=False)
        raise typer.Exit(EXIT_SIGINT) from None


def _print_done(result, quiet: bool) -> None:
    """The finished run's line and its test recall (instance level, then the label level when captions repeat)."""
    ev = result.eval or {}
    console.print(f"[bold green]done[/] {result.run_dir}: {result.message}", highlight=False)
    if ev and not quiet:
        from mwa_cli.eval.small_split import fmt_recalls, trivial_recalls, trivial_sentence

        trivial = trivial_recalls(ev)
        console.print(f"  {ev['split']} (instance level): i2t R@1/5/10 {fmt_recalls(ev['i2t'], trivial['i2t'], 1)} · "
                      f"t2i R@1/5/10 {fmt_recalls(ev['t2i'], trivial['t2i'], 1)} · RSUM {ev['rsum']:.2f}",
                      highlight=False)
        if note := trivial_sentence(ev, ev["split"]):
            console.print(f"  [yellow]{note}[/]", highlight=False)
        from mwa_cli.eval.label_level import summary_lines

        for line in summary_lines(ev):
            console.print(f"  {line}", highlight=False)


def _launch_devices(devices: str, device: str | None, cli: dict, config, resume: str | None, out: str | None
                    ) -> int | None:
    """`--devices N|0,1|all`: re-run this command as N processes (`mwa_cli.train.launcher`) and return the exit
    code; None when one device was asked for (train in this process)."""
    import sys
    import time

    from mwa_cli.train import launcher
    from mwa_cli.train.config import resolve_config
    from mwa_cli.train.measure import process_age_s
    from mwa_cli.train.run_dir import RunDir
    from mwa_cli.train.setup import command_line, resolve_run_path

    if resume:  # the device type is the run's own
        device = RunDir(resolve_run_path(resume, out or "runs")).read_config().get("device", device)
    else:
        resolve_config(cli, config)  # option errors once, before starting N processes
    n, visible = launcher.parse_devices(devices, device)
    if visible is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = visible
    if n <= 1:
        return None
    t0 = time.time() - process_age_s()
    return launcher.launch(n, launcher.strip_devices(sys.argv[1:]), report=_print_failure, visible=visible,
                           cpu=(device or "").lower() == "cpu", t0_wall=t0, command=command_line())


def _print_failure(failure: FailureReport) -> None:
    """The launcher's `FailureReport`: error, the failing process's last output, hint."""
    err_console.print(f"[bold red]error:[/] {failure.error}", highlight=False)
    if failure.output:
        err_console.print(f"  its last output:\n{failure.output}", highlight=False)
    err_console.print(f"[yellow]hint:[/] {failure.hint}", highlight=False)
