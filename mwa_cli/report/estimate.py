"""``mwa report --estimate``: a full fine-tuning baseline estimated from a few measured steps.

When no full fine-tuning run exists, the report can measure full fine-tuning's step time on this hardware and
extrapolate to the same number of training samples as a measured run (the reference: the main compared run).
The measurement itself belongs to the trainer, with its request and result types; this module only calls it
(through ``default_measure``, which tests replace) and extrapolates::

    # mwa_cli/train/estimate.py
    def measure_full_ft_step(request: EstimateRequest) -> StepMeasurement: ...

It builds the full fine-tuning model for ``request.config`` (the reference run's resolved configuration with
``method`` set to ``"full-ft"``, same backbone, precision, device and effective batch), runs
``request.warmup_steps`` un-timed then ``request.steps`` timed optimizer steps on real batches of
``request.data_dir`` (synchronising the device around the timer) and returns the median seconds per optimizer
step, the samples per step and the peak memory. It writes nothing into any run folder.

Extrapolation (every figure of the result is marked "estimated"):

* train_s = step_s x (reference samples / samples_per_step)
* eval_s and checkpoint_s are taken from the reference run (assumed similar), wall_s = train + eval + checkpoint
* device_hours = wall_s x n_devices / 3600; samples/s = samples_per_step / step_s
* trainable params = total params (full fine-tuning trains everything); artefact size = total params x
  ``bytes_per_param`` (4 for fp32 weights)
* recall: not estimated (None): it can only be measured by training.
"""

from __future__ import annotations

import copy
import math
import shlex
from pathlib import Path
from typing import Callable

from mwa_cli.errors import MwaError
from mwa_cli.report.collect import Run, resolve_data_dir
from mwa_cli.report.roi import BASELINE_METHOD
from mwa_cli.train.estimate import EstimateRequest, StepMeasurement

MeasureFn = Callable[[EstimateRequest], StepMeasurement]


def default_measure() -> MeasureFn:
    """The trainer's measurement (``mwa_cli.train.estimate.measure_full_ft_step``), or a clear error."""
    try:
        from mwa_cli.train.estimate import measure_full_ft_step  # type: ignore[import-not-found]
    except ImportError:
        raise MwaError(
            "--estimate needs the trainer's full fine-tuning step measurement "
            "(mwa_cli.train.estimate.measure_full_ft_step), which this version of mwa does not have yet",
            hint="train a full fine-tuning run instead (command shown by `mwa report` without --estimate)",
        ) from None
    return measure_full_ft_step


def full_ft_command(reference: Run) -> str:
    """The command that trains the matching full fine-tuning run (same data, backbone, budget and options).

    A run folder is not trusted: the command it recorded (config.json "command") is never repeated. The command
    is rebuilt from the recorded options, each checked for its type (a value that fails is left out) and every
    value shell-quoted, so whatever a config.json holds, pasting the line runs `mwa train` and nothing else."""
    cfg = reference.config

    def text(key: str) -> str | None:
        v = cfg.get(key)
        return v if isinstance(v, str) and v.strip() and "\0" not in v else None

    def number(key: str, kind: type) -> str | None:
        v = cfg.get(key)
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
        return str(kind(v)) if ok and (kind is not int or float(v).is_integer()) else None

    parts = ["mwa", "train", text("data_dir") or "DATA_DIR", "--method", BASELINE_METHOD,
             "--backbone", text("backbone") or reference.backbone]
    options = [("--weights", text("weights")), ("--tokenizer", text("tokenizer")), ("--budget", _budget(cfg)),
               ("--steps", number("steps", int)), ("--epochs", number("epochs", float)),
               ("--batch-size", number("batch_size", int)), ("--out", text("out"))]
    parts += [x for flag, value in options if value is not None for x in (flag, value)]
    return " ".join(shlex.quote(p) for p in parts)


def _budget(cfg: dict) -> str | None:
    """The run's --budget, if it reads as one (`parse_budget`)."""
    from mwa_cli.errors import ConfigError
    from mwa_cli.train.config import parse_budget

    v = cfg.get("budget")
    if not isinstance(v, (str, int, float)) or isinstance(v, bool) or v in ("", 0):
        return None
    try:
        parse_budget(v)
    except (ConfigError, ValueError, OverflowError):
        return None
    return str(v)


def estimate_full_ft_run(
    reference: Run, measure: MeasureFn | None = None, *, steps: int = 10, data_dir: Path | None = None
) -> Run:
    """A synthetic full fine-tuning Run (``estimated=True``) extrapolated from a few measured steps."""
    measure = measure or default_measure()
    cfg = copy.deepcopy(reference.config)
    cfg["method"] = BASELINE_METHOD
    req = EstimateRequest(config=cfg, data_dir=resolve_data_dir(reference, data_dir),
                          reference_run=reference.path, steps=steps)
    m = measure(req)
    if not (m.step_s > 0 and m.samples_per_step > 0):
        raise MwaError("the full fine-tuning step measurement returned no usable time")
    rt = reference.timing
    samples = rt.get("samples")
    if not samples:
        samples = (rt.get("steps") or 0) * m.samples_per_step
    n_steps = samples / m.samples_per_step
    train_s = m.step_s * n_steps
    eval_s = float(rt.get("eval_s") or 0.0)
    ckpt_s = float(rt.get("checkpoint_s") or 0.0)
    wall_s = train_s + eval_s + ckpt_s
    timing = {
        "wall_s": wall_s, "train_s": train_s, "eval_s": eval_s, "checkpoint_s": ckpt_s,
        "steps": int(round(n_steps)), "samples": samples, "samples_per_s": m.samples_per_step / m.step_s,
        "device_hours": wall_s * m.n_devices / 3600.0, "device_type": m.device_type,
        "device_name": m.device_name, "n_devices": m.n_devices, "peak_mem_gib": m.peak_mem_gib,
        "data_wait_fraction": None, "budget_s": rt.get("budget_s"), "torch": m.torch or rt.get("torch"),
        "mwa": rt.get("mwa"), "trainable_params": m.total_params, "total_params": m.total_params,
        "estimated": True, "measured_steps": m.steps_measured or steps, "step_s": m.step_s,
    }
    cfg["command"] = full_ft_command(reference) + "   # not run: estimated by mwa report --estimate"
    ev = {"split": reference.eval.get("split"), "dataset_hash": reference.dataset_hash,
          "method": BASELINE_METHOD, "backbone": reference.backbone}
    # named like the method; the run is marked estimated everywhere it appears (no such folder is written)
    return Run(path=reference.path.parent / BASELINE_METHOD, config=cfg, timing=timing, eval=ev,
               artefact_bytes=int(m.total_params * m.bytes_per_param), estimated=True)
