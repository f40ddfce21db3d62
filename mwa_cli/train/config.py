"""Training configuration: one dataclass, resolved from defaults ← config file (JSON/TOML) ← command line."""

from __future__ import annotations

import dataclasses
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mwa_cli.errors import EXIT_USAGE, ConfigError
from mwa_cli.ranges import COUNT, SEED, Range, out_of_range
from mwa_cli.safe_open import MAX_JSON_DEPTH, nesting_depth, parse_json, read_text
from mwa_cli.typecheck import TypeMismatch, conform, type_names

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DEVICES = ("auto", "cuda", "cpu")
FLIP_MODES = ("auto", "on", "off")
FEATURE_CACHE_MODES = ("off", "auto", "gpu", "ram", "disk")
POSITIVE_MODES = ("auto", "caption", "label", "off")
EXTEND_VOCAB_MODES = ("auto", "on", "off")
SCHEDULES = ("auto", "cosine", "wsd")
DEFAULT_EPOCHS = 10  # the length of a run given no --budget, --epochs or --steps
# Captions that are mostly repeats (class-folder templates) leave one short text per label, and every method was
# still learning at 10 epochs on such data; 40 epochs at batch 32 brought MWA level with full fine-tuning, and a
# larger batch needs as many steps, not as many epochs (docs/decisions.md).
TEMPLATED_DEFAULT_EPOCHS = 40
TEMPLATED_REFERENCE_BATCH = 32


def default_steps(templated: bool, pairs: int, steps_per_epoch: int) -> tuple[int, str]:
    """Optimizer steps of a run given no length, and how they were chosen: DEFAULT_EPOCHS epochs; when the train
    captions are mostly repeats, TEMPLATED_DEFAULT_EPOCHS epochs but no fewer steps than those epochs take at
    batch TEMPLATED_REFERENCE_BATCH."""
    if not templated:
        return DEFAULT_EPOCHS * steps_per_epoch, f"{DEFAULT_EPOCHS} epochs"
    floor = TEMPLATED_DEFAULT_EPOCHS * max(1, pairs // TEMPLATED_REFERENCE_BATCH)
    steps = max(TEMPLATED_DEFAULT_EPOCHS * steps_per_epoch, floor)
    return steps, (f"{steps / steps_per_epoch:g} epochs: captions that are mostly repeats train "
                   f"{TEMPLATED_DEFAULT_EPOCHS} epochs, at least the steps of {TEMPLATED_DEFAULT_EPOCHS} epochs at "
                   f"batch {TEMPLATED_REFERENCE_BATCH}; {DEFAULT_EPOCHS} epochs on varied captions")


_SIZE = Range(1, 2**20, whole=True)  # a batch of samples
# Every numeric option's range (the one table: command line, --config files and a run's config.json all pass
# through TrainConfig.validate). Values outside are refused by name; NaN and infinity are outside every range.
RANGES: dict[str, Range] = {
    "epochs": Range(0, 1e6, lo_open=True), "steps": COUNT, "batch_size": _SIZE, "micro_batch": _SIZE,
    "lr": Range(0, 10, lo_open=True), "min_lr": Range(0, 10), "warmup_frac": Range(0, 1),
    "layer_decay": Range(0, 1, lo_open=True), "weight_decay": Range(0, 10), "drop_path": Range(0, 1, hi_open=True),
    "workers": Range(0, 1024, whole=True), "crop_scale_min": Range(0, 1, lo_open=True),
    "extend_vocab_lr": Range(0, 10, lo_open=True), "seed": SEED, "log_every": COUNT,
    "val_evals": Range(0, 10**6, whole=True), "val_share": Range(0, 1, hi_open=True),
    "patience": Range(0, 10**6, whole=True), "checkpoint_every": Range(0, 2**31 - 1, whole=True),
    "checkpoint_minutes": Range(0, 10**6, lo_open=True), "eval_batch_size": _SIZE,
    "text_len": Range(1, 8192, whole=True),
}
_OPTION_NAMES = {"warmup_frac": "--warmup", "crop_scale_min": "crop_scale_min", "extend_vocab_lr": "extend_vocab_lr"}
MAX_BUDGET_S = 366 * 86400.0  # a year: a longer budget is a typing error (and an overflow for the planner)


@dataclass
class TrainConfig:
    """Every option of `mwa train`. Field names are the config-file keys (dashes also accepted)."""

    data_dir: str = ""
    method: str = "mwa"
    method_options: dict = field(default_factory=dict)
    backbone: str = "beit3-base"
    weights: str | None = None
    # length of the run: budget (wall clock, whole run), epochs, steps: whichever ends first
    budget: str | None = None
    epochs: float | None = None
    steps: int | None = None
    # batch: effective batch per optimizer step; micro-batch for gradient accumulation
    batch_size: int | str | None = None  # None: 128 on CUDA (BEiT-3 Base recipe), 32 on CPU; "auto": probe
    micro_batch: int | None = None
    lr: float | None = None  # None: the backbone's recommended rate for the method (registry.recommended_lr)
    min_lr: float = 1e-6
    warmup_frac: float = 0.1
    layer_decay: float = 0.65
    weight_decay: float = 0.05
    drop_path: float = 0.1
    precision: str = "auto"
    device: str = "auto"
    workers: int | None = None
    # augmentation
    crop_scale_min: float = 0.5
    flip: str = "auto"
    # cache the frozen layers' output once (needs adapters in the top layers only; turns augmentation off)
    feature_cache: str = "off"  # off | auto | gpu | ram | disk (mwa_cli/train/feature_cache.py)
    # contrastive positives: auto (caption when captions repeat in the train split) | caption | label | off
    positives: str = "auto"
    # vocabulary extension (mwa_cli.adapters.vocab): auto = on when > 2 % of the train captions' tokens are <unk>
    extend_vocab: str = "auto"
    extend_vocab_init: str = "mean"  # mean (of the embedding rows) | sample (their mean + covariance) | unk
    extend_vocab_lr: float = 2e-2  # peak lr of the new rows (same warm-up + cosine shape as the rest)
    # bookkeeping
    out: str = "runs"
    name: str | None = None
    seed: int = 0
    log_every: int = 10
    log: str = "off"  # off | tensorboard: also write the metric rows there (mwa_cli/train/metric_sinks.py)
    val_evals: int | None = None  # None: cost-aware checks (≤ val_share of the wall time); k: k evenly spaced
    val_share: float = 0.05
    # training times (s, without evaluations) also checked once reached: `mwa tune`'s pruning rungs, so that
    # trials are compared on what each had reached at the same time, not at their next regular check
    val_at: list[float] = field(default_factory=list)
    patience: int | None = None  # val checks without improvement before stopping; None: 4 under --budget, else off
    schedule: str = "auto"  # auto (wsd with --budget, cosine otherwise) | cosine | wsd (mwa_cli/train/schedule.py)
    checkpoint_every: int = 0
    checkpoint_minutes: float = 10.0
    eval_batch_size: int = 128
    final_split: str = "test"
    compile: bool | None = None  # None: on with CUDA, off on the CPU (train/compile_policy.py)
    compile_mode: str = "auto"  # auto (per method: compile_policy.AUTO_MODES) | default | reduce-overhead | graph
    text_len: int | None = None
    tokenizer: str | None = None
    resume: str | None = None
    command: str = ""
    tune: str | None = None  # the `mwa tune` folder that recommended this configuration (its page: the report links it)

    # ---------------------------------------------------------------- derived / checks
    @property
    def budget_s(self) -> float | None:
        return parse_budget(self.budget) if self.budget not in (None, "") else None

    def validate(self) -> "TrainConfig":
        from mwa_cli.adapters.registry import resolve_options

        resolve_options(self.method, self.method_options)  # unknown method, option or value: before any model
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}", hint="choose bf16, fp16, fp32 or auto")
        if self.device not in DEVICES:
            raise ConfigError(f"unknown device {self.device!r}", hint="choose auto, cuda or cpu")
        if self.flip not in FLIP_MODES:
            raise ConfigError(f"unknown flip mode {self.flip!r}", hint="choose auto, on or off")
        if self.feature_cache not in FEATURE_CACHE_MODES:
            raise ConfigError(f"unknown --feature-cache mode {self.feature_cache!r}",
                              hint=f"choose {', '.join(FEATURE_CACHE_MODES)}")
        if self.feature_cache != "off" and self.flip == "on":
            raise ConfigError("--feature-cache stores each image once, so it cannot be combined with --flip on",
                              hint="drop --flip on (the cache uses whole, unflipped images) or --feature-cache")
        if self.positives not in POSITIVE_MODES:
            raise ConfigError(f"unknown --positives mode {self.positives!r}", hint=f"choose {', '.join(POSITIVE_MODES)}")
        if self.extend_vocab not in EXTEND_VOCAB_MODES:
            raise ConfigError(f"unknown --extend-vocab mode {self.extend_vocab!r}", hint="choose auto, on or off")
        if self.final_split not in ("test", "val"):
            raise ConfigError(f"final split must be test or val, not {self.final_split!r}")
        if isinstance(self.batch_size, str):
            if self.batch_size.strip().lower() == "auto":
                self.batch_size = "auto"
            else:
                try:
                    self.batch_size = int(self.batch_size)
                except ValueError:
                    raise ConfigError(f"--batch-size must be a number or 'auto', not {self.batch_size!r}") from None
        bad = out_of_range(vars(self), RANGES)
        if bad is not None:
            name, value, rng = bad
            raise ConfigError(f"{_OPTION_NAMES.get(name, '--' + name.replace('_', '-'))} must be {rng.describe()}, "
                              f"not {value!r}"[:300], hint=f"e.g. {_example(name)}")
        if self.budget not in (None, ""):
            parse_budget(self.budget)
        if any(not 0 < t < MAX_BUDGET_S for t in self.val_at):
            raise ConfigError(f"val_at must hold training times in seconds, above 0 and under a year, not {self.val_at!r}"[:300],
                              hint="e.g. val_at = [4.2, 12.5]")
        if self.name is not None:
            from mwa_cli.train.run_dir import check_run_name

            check_run_name(self.name)
        from mwa_cli.train.compile_policy import COMPILE_MODES

        if self.compile_mode not in COMPILE_MODES:
            raise ConfigError(f"unknown --compile-mode {self.compile_mode!r}", hint=f"choose {', '.join(COMPILE_MODES)}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown --schedule {self.schedule!r}", hint="choose auto, cosine or wsd")
        from mwa_cli.train.metric_sinks import check_log_mode

        check_log_mode(self.log)
        return self

    @property
    def patience_checks(self) -> int:
        """Early-stopping patience in use: explicit, else the measured default under a budget, else 0 (off)."""
        from mwa_cli.train.early_stop import DEFAULT_PATIENCE

        if self.patience is not None:
            return int(self.patience)
        return DEFAULT_PATIENCE if self.budget not in (None, "") else 0

    @property
    def schedule_kind(self) -> str:
        """The schedule actually used: "auto" is warm-up/stable/decay under a budget, cosine otherwise."""
        if self.schedule != "auto":
            return self.schedule
        return "wsd" if self.budget not in (None, "") else "cosine"

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["budget_s"] = self.budget_s
        return d


_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}
# what a value read from a file may be: the field's type hint; parse_budget also takes seconds as a number
_HINTS: dict[str, Any] = {**typing.get_type_hints(TrainConfig), "budget": str | float | None}


# examples for the options whose default is "not given" (None)
_EXAMPLES = {"lr": "2e-4", "epochs": "10", "steps": "1000", "batch_size": "32", "micro_batch": "16", "workers": "4",
             "val_evals": "5", "patience": "4", "text_len": "64"}


def _example(name: str) -> str:
    """An accepted value of option `name` as the user would type it: its default, else a typical value."""
    value = getattr(TrainConfig(), name, None)
    text = _EXAMPLES.get(name, "") if value is None else (f"{value:g}" if isinstance(value, float) else str(value))
    return f"{_OPTION_NAMES.get(name, '--' + name.replace('_', '-'))} {text}"


def check_types(values: dict[str, Any], source: str) -> dict[str, Any]:
    """Values read from a file (a --config file, a run's config.json) must have their option's type: a clear
    error naming the option and the file, never a TypeError deep inside training. Integral floats become ints."""
    out = dict(values)
    for key, value in values.items():
        hint = _HINTS.get(key)
        if hint is None:
            continue
        try:
            out[key] = conform(value, hint, json_numbers=True)
        except TypeMismatch:
            want = " or ".join(sorted(type_names(hint)))
            raise ConfigError(f"{key} in {source} must be {want}, not {value!r}"[:300],
                              hint="fix the value in the file (option names and types: `mwa train --help`)") from None
    return out


_BUDGET_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(hours?|hrs?|h|minutes?|mins?|m|seconds?|secs?|s|days?|d)?", re.I)
_UNIT_S = {"h": 3600, "m": 60, "s": 1, "d": 86400}


def parse_budget(text: str | int | float) -> float:
    """'2h' | '90m' | '3600s' | '1h30m' | '1.5h' | '3600' (seconds) → seconds (float > 0)."""
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        s = str(text).strip().replace(" ", "")
        pos, seconds = 0, 0.0
        if not s:
            raise ConfigError("empty --budget", hint="write e.g. 2h, 90m or 3600s")
        while pos < len(s):
            m = _BUDGET_RE.match(s, pos)
            if not m or m.end() == pos:
                raise ConfigError(f"cannot read the budget {text!r}", hint="write e.g. 2h, 90m, 1h30m or 3600s")
            unit = (m.group(2) or "s")[0].lower()
            seconds += float(m.group(1)) * _UNIT_S[unit]
            pos = m.end()
    if not 0 < seconds <= MAX_BUDGET_S:  # NaN fails both comparisons
        raise ConfigError(f"the budget must be positive and at most a year, got {text!r}",
                          hint="write e.g. 2h, 90m or 3600s")
    return seconds


def load_config_file(path: str | Path) -> dict:
    """Read a JSON or TOML config file into a dict of TrainConfig fields (dashes → underscores)."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file not found: {p}")
    text = read_text(p, what="config file", exit_code=EXIT_USAGE)  # a regular file, at most 16 MiB
    try:
        if p.suffix.lower() == ".toml":
            raw = tomllib.loads(text)
            if nesting_depth(raw) > MAX_JSON_DEPTH:
                raise ValueError(f"nests deeper than {MAX_JSON_DEPTH} levels")
        else:
            raw = parse_json(text)
    except RecursionError:
        raise ConfigError(f"cannot parse config file {p}: it nests deeper than {MAX_JSON_DEPTH} levels",
                          hint="use JSON (.json) or TOML (.toml)") from None
    except ValueError as exc:  # json's and tomllib's syntax errors are ValueErrors
        raise ConfigError(f"cannot parse config file {p}: {exc}", hint="use JSON (.json) or TOML (.toml)") from None
    if isinstance(raw, dict) and isinstance(raw.get("train"), dict):  # allow a [train] table
        raw = raw["train"]
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {p} must hold an object/table of options")
    out = {}
    unknown = []
    for key, value in raw.items():
        k = key.replace("-", "_")
        if k == "budget_s":  # written by config.json of a run: derived, ignore
            continue
        if k in ("data_dir", "dataset_hash", "mwa_version", "run_dir") and k not in _FIELDS:
            continue
        if k not in _FIELDS:
            unknown.append(key)
            continue
        out[k] = value
    if unknown:
        raise ConfigError(f"unknown option(s) in {p}: {', '.join(sorted(unknown))}",
                          hint="option names are those of `mwa train --help` (with _ or -)")
    return check_types(out, str(p))


def resolve_config(cli: dict[str, Any], config_file: str | Path | None = None) -> TrainConfig:
    """defaults ← config file ← command-line values that were given (None = not given)."""
    values: dict[str, Any] = {}
    if config_file:
        values.update(load_config_file(config_file))
    for key, value in cli.items():
        if value is None:
            continue
        if key not in _FIELDS:
            raise ConfigError(f"unknown option {key!r}")
        values[key] = value
    cfg = TrainConfig(**values).validate()
    if not cfg.resume:  # a new run: refused before any process starts when its backbone has no weights
        from mwa_cli.models.presets import require_weights

        require_weights(cfg.backbone, cfg.weights)
    return cfg


def config_from_run(run_config: dict, source: str = "the run's config.json") -> TrainConfig:
    """Rebuild a TrainConfig from a run's config.json (extra keys ignored)."""
    values = check_types({k: v for k, v in run_config.items() if k in _FIELDS}, source)
    return TrainConfig(**values).validate()
