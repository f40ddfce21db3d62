"""Where a run's metric rows go besides metrics.jsonl: `mwa train --log tensorboard` (off by default).

`RunDir.append_metrics` hands every row it writes (train rows: loss, learning rate, samples/s, peak memory; eval
rows: the validation checks) to the sinks attached to the run folder, and `RunDir.write_eval` the final
evaluation, so the training loop needs no change to feed them. Rank 0 alone writes (the other ranks' `NullRunDir`
never calls its sinks).

TensorBoard: events in ``RUN/tensorboard/`` through the library's own writer (``torch.utils.tensorboard``, which
needs the ``tensorboard`` package: ``pip install 'mwa-cli[log]'``); ``tensorboard --logdir runs`` shows every run.
A resumed run purges the events after its checkpoint's step, as metrics.jsonl drops those rows.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Protocol

from mwa_cli.errors import ConfigError

LOG_MODES = ("off", "tensorboard")
TENSORBOARD_DIR = "tensorboard"
_TRAIN_TAGS = {"loss": "train/loss", "lr": "train/learning_rate", "samples_per_s": "train/samples_per_s",
               "mem_gib": "train/peak_memory_gib", "epoch": "train/epoch"}
_EVAL_KEYS = ("rsum", "mean_recall", "i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10")


class MetricSink(Protocol):
    def write(self, row: dict[str, Any]) -> None: ...

    def final(self, eval_dict: dict[str, Any]) -> None: ...


def check_log_mode(mode: str) -> None:
    """Refuse an unknown `--log` or a logger whose package is missing, before anything is built."""
    if mode not in LOG_MODES:
        raise ConfigError(f"unknown --log {mode!r}", hint=f"choose {' or '.join(LOG_MODES)}")
    if mode == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("--log tensorboard needs the tensorboard package, which is not installed",
                          hint="pip install 'mwa-cli[log]' (or pip install tensorboard), or leave --log out")


class TensorBoardSink:
    """Scalars for TensorBoard: train/loss, train/learning_rate, train/step_time_s, train/samples_per_s,
    train/peak_memory_gib, train/epoch; val/<metric> for each validation check; test/<metric> at the end."""

    def __init__(self, folder: Path, *, batch_size: int, purge_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.batch_size = int(batch_size)
        self.last_step = int(purge_step or 0)
        self.writer = SummaryWriter(log_dir=str(folder), purge_step=purge_step)

    def write(self, row: dict[str, Any]) -> None:
        step = int(row.get("step", self.last_step))
        self.last_step = step
        if row.get("kind") == "train":
            for key, tag in _TRAIN_TAGS.items():
                if row.get(key) is not None:
                    self.writer.add_scalar(tag, float(row[key]), step)
            if row.get("samples_per_s"):  # mean seconds per step over the logging interval
                self.writer.add_scalar("train/step_time_s", self.batch_size / float(row["samples_per_s"]), step)
        elif row.get("kind") == "eval":
            self._eval(str(row.get("split", "val")), row, step)
        self.writer.flush()  # a killed run keeps every row it logged

    def final(self, eval_dict: dict[str, Any]) -> None:
        flat = {"rsum": eval_dict.get("rsum"), "mean_recall": eval_dict.get("mean_recall"),
                **{f"{d}_r{k}": (eval_dict.get(d) or {}).get(f"r{k}") for d in ("i2t", "t2i") for k in (1, 5, 10)}}
        self._eval(str(eval_dict.get("split", "test")), flat, self.last_step)
        self.writer.close()

    def _eval(self, split: str, values: dict[str, Any], step: int) -> None:
        for key in _EVAL_KEYS:
            if values.get(key) is not None:
                self.writer.add_scalar(f"{split}/{key}", float(values[key]), step)


def attach_sinks(run: Any, mode: str, *, batch_size: int, resumed_at: int | None = None) -> None:
    """Give the run folder the sinks `mode` asks for (`resumed_at`: the step a resumed run continues from)."""
    if mode == "tensorboard":
        run.sinks.append(TensorBoardSink(run.path / TENSORBOARD_DIR, batch_size=batch_size, purge_step=resumed_at))
