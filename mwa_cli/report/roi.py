"""The cost / ROI model behind the report's "Yearly cost" section. Every assumption is an explicit input.

Assumptions (all adjustable on the command line, all printed in the report):

* ``gpu_cost_per_hour`` (``--gpu-cost``, default 2.5) in ``currency`` (``--currency``, default USD) per
  device-hour. It is applied to the run's measured device-hours (timing.json ``device_hours``, i.e. wall time x
  number of devices); on a CPU run it is read as the price of one CPU-hour.
* ``lines`` (``--lines``, default 10): production lines / product variants, each needing its own model.
* ``retrains_per_year`` (``--retrains-per-year``, default 12): retrains of each line's model per year.
* A retrain costs what the measured run cost: same data size, same hardware, same budget.
* Storage: each line keeps its own artefact (``adapter_model.safetensors``; for full fine-tuning that is the
  full weights). Methods other than full fine-tuning also keep ONE shared copy of the backbone, whose size is
  the full fine-tuning artefact when one was measured, else ``total_params x 4 bytes`` (fp32), marked estimated.
  Storage is reported in bytes, not money (prices of disks differ too much to guess).

Yearly compute cost = device-hours per training x lines x retrains_per_year x gpu_cost_per_hour.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

BASELINE_METHOD = "full-ft"


@dataclass
class Assumptions:
    gpu_cost_per_hour: float = 2.5
    currency: str = "USD"
    lines: int = 10
    retrains_per_year: int = 12

    def __post_init__(self) -> None:
        from mwa_cli.errors import ConfigError

        if not (self.gpu_cost_per_hour >= 0):
            raise ConfigError(f"--gpu-cost must be 0 or more, got {self.gpu_cost_per_hour}")
        if self.lines < 1:
            raise ConfigError(f"--lines must be at least 1, got {self.lines}")
        if self.retrains_per_year < 0:
            raise ConfigError(f"--retrains-per-year must be 0 or more, got {self.retrains_per_year}")
        if not self.currency.strip():
            raise ConfigError("--currency must not be empty")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def savings_pct(value: float | None, baseline: float | None) -> float | None:
    """How much less than the baseline, in percent (positive = saves; negative = costs more)."""
    if value is None or baseline is None or baseline <= 0:
        return None
    return 100.0 * (baseline - value) / baseline


def yearly(
    device_hours: float | None,
    artefact_bytes: int | None,
    *,
    is_full_ft: bool,
    backbone_bytes: float | None,
    a: Assumptions,
) -> dict[str, Any]:
    """Yearly figures for one method."""
    trainings = a.lines * a.retrains_per_year
    hours_year = device_hours * trainings if device_hours is not None else None
    cost_year = hours_year * a.gpu_cost_per_hour if hours_year is not None else None
    storage = None
    if artefact_bytes is not None:
        storage = a.lines * artefact_bytes
        if not is_full_ft:
            storage = storage + backbone_bytes if backbone_bytes is not None else None
    return {
        "trainings_per_year": trainings,
        "device_hours_per_year": hours_year,
        "compute_cost_per_year": cost_year,
        "storage_bytes": storage,
    }


def diff(value: float | None, baseline: float | None) -> float | None:
    """value - baseline (negative = cheaper than the baseline)."""
    if value is None or baseline is None:
        return None
    return value - baseline
