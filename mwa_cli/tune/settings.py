"""What `mwa tune` was asked for, checked before anything trains: `TuneSettings`."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mwa_cli.errors import ConfigError
from mwa_cli.train.config import load_config_file, parse_budget

PRUNERS = ("halving", "hyperband", "none")
TRIALS_PER_BUDGET = 6  # full-length trials a method's budget holds by default (pruned ones leave room for more)
DEFAULT_VAL_SHARE = 0.1  # trials check val more often than `mwa train` (5 %): the pruner and the curves need checks
# Options every trial gets from the search, the tune or its trial length: a --config file may not set them.
CHOSEN_BY_TUNE = ("data_dir", "method", "method_options", "lr", "batch_size", "feature_cache", "layer_decay",
                  "budget", "steps", "epochs", "name", "out", "resume", "final_split", "seed", "val_share", "tune",
                  "command")


@dataclass
class TuneSettings:
    """Every option of `mwa tune`; `methods` holds the method tuned and, with --compare, its baseline."""

    data_dir: str
    methods: tuple[str, ...] = ("mwa",)
    backbone: str = "beit3-base"
    weights: str | None = None
    tokenizer: str | None = None
    device: str = "auto"
    seed: int = 0
    budget: str | None = None  # the whole tune, split evenly between the methods
    trial_budget: str | None = None  # each trial's `mwa train --budget`; default: a method's budget / 6
    trial_steps: int | None = None  # each trial's `mwa train --steps` instead of a budget
    max_trials: int | None = None  # per method
    tolerance: float = 0.01  # the recommendation may lose this share of the best val RSUM
    share: float = 0.95  # "fastest": time to reach this share of the best val RSUM
    pruner: str = "halving"
    compile: bool = False
    val_share: float = DEFAULT_VAL_SHARE
    base_config: str | None = None  # a --config file: fixed training options of every trial
    out: str = "runs"
    name: str | None = None

    def validate(self) -> "TuneSettings":
        from mwa_cli.adapters.registry import get

        if not self.data_dir:
            raise ConfigError("no data directory given", hint="mwa tune DATA_DIR --method mwa --budget 30m")
        for method in self.methods:
            if get(method).name == "frozen":
                raise ConfigError("method frozen trains nothing: there is nothing to tune",
                                  hint="tune mwa, nke, lora or full-ft")
        if len(set(self.methods)) != len(self.methods):
            raise ConfigError(f"--compare {self.methods[-1]} is the method tuned already",
                              hint="compare with another method, e.g. --method mwa --compare full-ft")
        if self.budget is not None:
            parse_budget(self.budget)
        if self.budget is None and self.max_trials is None:
            raise ConfigError("give the tune a --budget (e.g. 30m) or a number of --trials",
                              hint="mwa tune DATA --method mwa --budget 30m")
        if self.trial_budget is not None and self.trial_steps is not None:
            raise ConfigError("--trial-budget and --trial-steps both set the length of a trial: give one")
        if self.trial_budget is not None:
            parse_budget(self.trial_budget)
        if self.budget is None and self.trial_budget is None and self.trial_steps is None:
            raise ConfigError("without --budget each trial needs a length", hint="add --trial-budget 2m or "
                              "--trial-steps 200, or give the whole tune a --budget")
        if self.trial_steps is not None and self.trial_steps < 1:
            raise ConfigError("--trial-steps must be at least 1")
        if self.max_trials is not None and self.max_trials < 1:
            raise ConfigError("--trials must be at least 1")
        if not 0 <= self.tolerance < 0.5:
            raise ConfigError(f"--tolerance must be in [0, 0.5), not {self.tolerance:g}",
                              hint="e.g. --tolerance 0.01: the recommendation may lose 1 % of the best val RSUM")
        if not 0 < self.share <= 1:
            raise ConfigError(f"--share must be in (0, 1], not {self.share:g}", hint="e.g. --share 0.95")
        if self.pruner not in PRUNERS:
            raise ConfigError(f"unknown --pruner {self.pruner!r}", hint=f"choose {', '.join(PRUNERS)}")
        if not 0 < self.val_share < 1:
            raise ConfigError(f"--val-share must be in (0, 1), not {self.val_share:g}")
        self.fixed_values()  # a base config that cannot be used is refused now
        from mwa_cli.models.presets import require_weights

        require_weights(self.backbone, self.weights)  # a backbone that needs weights is refused without them
        if self.name is not None:
            from mwa_cli.train.run_dir import check_run_name

            check_run_name(self.name)
        return self

    @property
    def budget_s(self) -> float | None:
        return parse_budget(self.budget) if self.budget is not None else None

    @property
    def method_budget_s(self) -> float | None:
        """Each method's share of the budget (the budget split evenly)."""
        return None if self.budget_s is None else self.budget_s / len(self.methods)

    def trial_length(self) -> dict[str, float | int]:
        """{"budget_s": seconds} or {"steps": n}: the length of every trial, from the options given."""
        if self.trial_steps is not None:
            return {"steps": int(self.trial_steps)}
        if self.trial_budget is not None:
            return {"budget_s": parse_budget(self.trial_budget)}
        return {"budget_s": round(self.method_budget_s / TRIALS_PER_BUDGET, 1)}

    @property
    def tune_name(self) -> str:
        """--name, else tune-<methods>-<backbone>: the same command finds the same folder again."""
        if self.name:
            return self.name
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", self.backbone).strip("-") or "backbone"
        return f"tune-{'-vs-'.join(self.methods)}-{safe}"

    @property
    def folder(self) -> Path:
        return Path(self.out) / self.tune_name

    def fixed_values(self) -> dict[str, Any]:
        """The TrainConfig values every trial shares: the --config file's, then the options given here."""
        values: dict[str, Any] = {}
        if self.base_config:
            values = load_config_file(self.base_config)
            taken = sorted(k for k in values if k in CHOSEN_BY_TUNE)
            if taken:
                raise ConfigError(f"{self.base_config} sets {', '.join(taken)}, which the tune chooses itself",
                                  hint="remove them from the file (the tune's own options set the method, data "
                                       "and the length of a trial)")
        values.update(backbone=self.backbone, device=self.device, compile=self.compile)
        for key in ("weights", "tokenizer"):
            if getattr(self, key) is not None:
                values[key] = getattr(self, key)
        return values

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
