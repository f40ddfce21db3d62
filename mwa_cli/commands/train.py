"""`mwa train`: thin Typer wrapper around mwa_cli.train.loop.train (options → TrainConfig → Rich progress)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from mwa_cli.commands import train_options as opt
from mwa_cli.commands.common import (
    EXTRA_ARGS,
    TokenizerOption,
    console,
    emit_json,
    err_console,
    guarded,
    refuse_extra_args,
)
from mwa_cli.errors import EXIT_SIGINT

if TYPE_CHECKING:
    from mwa_cli.train.launcher import FailureReport
    from mwa_cli.train.loop import RunResult

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


# Parameters of `mwa train` that are not TrainConfig fields: the command acts on them itself.
COMMAND_ONLY = ("config", "devices", "quiet", "json_out", "seeds")
# Parameters whose TrainConfig field has another name or form: parameter -> (field, conversion).
RENAMED = {"option": ("method_options", _parse_options)}


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


@dataclass(frozen=True)
class TrainRequest:
    """What one `mwa train` command line asks for, read from its parsed parameters."""

    options: dict[str, Any]  # TrainConfig values given on the command line (None: not given)
    config_file: Path | None  # --config
    seeds: int | None
    devices: str | None
    device: str | None  # --device, kept apart: with --resume `options` holds only the run to continue
    quiet: bool
    json_out: bool
    ignored: tuple[str, ...] = ()  # options --resume ignores (the run keeps its own config.json)

    @property
    def resume(self) -> str | None:
        return self.options.get("resume")


def request_from_params(params: dict[str, Any]) -> TrainRequest:
    """The request of `mwa train`'s parsed parameters (`ctx.params`); with --resume, only the run folder and
    --out are kept and the other given options are listed in `ignored`."""
    options, config_file = config_values(params), params["config"]
    ignored: tuple[str, ...] = ()
    if options.get("resume"):
        given = sorted(k for k, v in options.items() if v is not None and k not in ("resume", "out"))
        ignored = tuple(given + (["config"] if config_file else []))
        options, config_file = {"resume": options["resume"], "out": options["out"]}, None
    device = params["device"]
    return TrainRequest(options=options, config_file=config_file, seeds=params["seeds"], devices=params["devices"],
                        device=None if device is None else str(device), quiet=params["quiet"],
                        json_out=params["json_out"], ignored=ignored)


def plan_runs(request: TrainRequest) -> list[dict[str, Any]]:
    """The options of each run the request trains: one, or one per seed with --seeds."""
    if request.seeds is None:
        return [request.options]
    return seed_runs(request.options, request.seeds, request.config_file, resume=request.resume,
                     devices=request.devices)


def register(app: typer.Typer) -> None:
    app.command("train", help=HELP, context_settings=EXTRA_ARGS)(guarded(train_cmd))


def train_cmd(
    ctx: typer.Context,
    data_dir: opt.DataDir = None,
    method: opt.Method = None,
    backbone: opt.Backbone = None,
    weights: opt.Weights = None,
    tokenizer: TokenizerOption = None,
    budget: opt.Budget = None,
    epochs: opt.Epochs = None,
    steps: opt.Steps = None,
    batch_size: opt.BatchSize = None,
    micro_batch: opt.MicroBatch = None,
    lr: opt.Lr = None,
    min_lr: opt.MinLr = None,
    warmup_frac: opt.Warmup = None,
    layer_decay: opt.LayerDecay = None,
    weight_decay: opt.WeightDecay = None,
    drop_path: opt.DropPath = None,
    precision: opt.PrecisionOption = None,
    device: opt.DeviceChoice = None,
    workers: opt.Workers = None,
    flip: opt.FlipOption = None,
    feature_cache: opt.FeatureCacheOption = None,
    extend_vocab: opt.ExtendVocabOption = None,
    positives: opt.PositivesOption = None,
    option: opt.MethodOption = None,
    out: opt.Out = None,
    name: opt.Name = None,
    resume: opt.Resume = None,
    seed: opt.Seed = None,
    seeds: opt.Seeds = None,
    val_evals: opt.ValEvals = None,
    val_share: opt.ValShare = None,
    patience: opt.Patience = None,
    schedule: opt.ScheduleOption = None,
    log_every: opt.LogEvery = None,
    log: opt.Log = None,
    checkpoint_every: opt.CheckpointEvery = None,
    checkpoint_minutes: opt.CheckpointMinutes = None,
    compile: opt.Compile = None,
    compile_mode: opt.CompileModeOption = None,
    devices: opt.Devices = None,
    config: opt.ConfigFile = None,
    quiet: opt.Quiet = False,
    json_out: opt.JsonOut = False,
) -> None:
    """Parse the options, plan the runs, start one process per device or train here, print the outcome."""
    refuse_extra_args(ctx.args, "--budget", budget, data_dir.name if data_dir else None)
    request = request_from_params(ctx.params)
    _note_ignored(request)
    plan = plan_runs(request)
    _launch_devices_if_asked(request)
    role = _process_role()
    results = _train_plan(plan, request, role)
    _finish(results, request, role)


def _note_ignored(request: TrainRequest) -> None:
    if request.ignored and not request.quiet:
        err_console.print(f"[yellow]note:[/] --resume continues the run with its own config.json; ignored: "
                          f"{', '.join(request.ignored)}", highlight=False)


@dataclass(frozen=True)
class _ProcessRole:
    """This process's part in a run: under torchrun, rank 0 alone talks; under mwa's own launcher, the launcher
    gives the command's exit code."""

    rank_other: bool  # a training process other than rank 0
    launched: bool  # started by `mwa train --devices`

    def exit_code(self, result: RunResult) -> int:
        return 0 if self.launched or result.status == "completed" else result.exit_code


def _process_role() -> _ProcessRole:
    from mwa_cli.train.dist.env import launched_by_mwa, under_torchrun

    return _ProcessRole(rank_other=under_torchrun() and os.environ.get("RANK", "0") != "0",
                        launched=launched_by_mwa())


def _train_plan(plan: list[dict[str, Any]], request: TrainRequest, role: _ProcessRole) -> list[RunResult]:
    """Train the planned runs in turn, up to the first that does not complete; a rank other than 0 exits after
    its run."""
    from mwa_cli.train.dist.handoff import write_result

    results = []
    for options in plan:
        result = _train_one(options, request.config_file, request.quiet or request.json_out or role.rank_other,
                            role.rank_other)
        results.append(result)
        if role.rank_other:
            raise typer.Exit(role.exit_code(result))
        write_result({"exit_code": result.exit_code, "status": result.status, "run_dir": str(result.run_dir)})
        if result.status != "completed":
            break
        if not request.json_out:
            _print_done(result, request.quiet)
    return results


def _finish(results: list[RunResult], request: TrainRequest, role: _ProcessRole) -> None:
    """--json's output, and the message and exit code of a run that did not complete."""
    if request.json_out:
        emit_json(results[0].to_dict() if request.seeds is None else [r.to_dict() for r in results])
    result = results[-1]
    if result.status == "completed":
        return
    if result.status == "interrupted":
        err_console.print(f"[yellow]{result.message}[/]", highlight=False)
    else:
        err_console.print(f"[bold red]error:[/] {result.message}", highlight=False)
    raise typer.Exit(0 if role.launched else result.exit_code)


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


def _launch_devices_if_asked(request: TrainRequest) -> None:
    """`--devices N|0,1|all` outside torchrun: re-run this command as N processes (`mwa_cli.train.launcher`) and
    exit with their exit code; one device asked for: return and train in this process."""
    from mwa_cli.train.dist.env import under_torchrun

    if request.devices is None or under_torchrun():
        return
    import sys
    import time

    from mwa_cli.train import launcher
    from mwa_cli.train.config import resolve_config
    from mwa_cli.train.measure import process_age_s
    from mwa_cli.train.run_dir import RunDir
    from mwa_cli.train.setup import command_line, resolve_run_path

    device = request.device
    if request.resume:  # the device type is the run's own
        device = RunDir(resolve_run_path(request.resume, request.options.get("out") or "runs")
                        ).read_config().get("device", device)
    else:
        resolve_config(request.options, request.config_file)  # option errors once, before starting N processes
    n, visible = launcher.parse_devices(request.devices, device)
    if visible is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = visible
    if n <= 1:
        return
    t0 = time.time() - process_age_s()
    raise typer.Exit(launcher.launch(n, launcher.strip_devices(sys.argv[1:]), report=_print_failure, visible=visible,
                                     cpu=(device or "").lower() == "cpu", t0_wall=t0, command=command_line()))


def _print_failure(failure: FailureReport) -> None:
    """The launcher's `FailureReport`: error, the failing process's last output, hint."""
    err_console.print(f"[bold red]error:[/] {failure.error}", highlight=False)
    if failure.output:
        err_console.print(f"  its last output:\n{failure.output}", highlight=False)
    err_console.print(f"[yellow]hint:[/] {failure.hint}", highlight=False)
