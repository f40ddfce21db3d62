"""The run directory's files, exactly as docs/formats.md specifies them (config, metrics, timing, eval)."""

from __future__ import annotations

import re
import time
from pathlib import Path

from mwa_cli import __version__
from mwa_cli.errors import ConfigError
from mwa_cli.fileio import atomic_write_json, atomic_write_text, json_line
from mwa_cli.outdir import MARKERS, FolderLock, is_empty, remove_temp, write_marker
from mwa_cli.printable import printable
from mwa_cli.run_files import read_metrics_rows
from mwa_cli.safe_open import InputFileError, load_json

TIMING_KEYS = ("wall_s", "train_s", "eval_s", "checkpoint_s", "steps", "samples", "samples_per_s", "device_hours",
               "device_type", "device_name", "n_devices", "peak_mem_gib", "data_wait_fraction", "budget_s", "torch",
               "mwa", "trainable_params", "total_params", "estimated")


MARKER = MARKERS["run"]  # marks a folder as an mwa run folder (folders of older versions: config.json with mwa_version)
# left by a killed writer: half-written checkpoints, atomic writes' temporary files, a disk feature cache
TEMP_PATTERNS = ("checkpoint/.tmp-*", ".*.tmp", "feature_cache_*.npy")


def check_run_name(name: str) -> str:
    """A run name is one folder name: it cannot leave --out (no separators, '..', absolute paths)."""
    bad = (not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name
           or Path(name).is_absolute() or name != name.strip())
    if bad:
        raise ConfigError(f"--name {name!r} is not a folder name",
                          hint="use letters, digits, '-', '_' and '.' (the run is written to --out/NAME)")
    return name


def is_run_folder(path: Path) -> bool:
    """True for a folder mwa made as a run folder (its marker, or an older run's config.json)."""
    if (path / MARKER).is_file():
        return True
    try:
        cfg = load_json(path / "config.json")
    except InputFileError:
        return False
    return isinstance(cfg, dict) and "mwa_version" in cfg


def default_run_name(method: str, backbone: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", backbone).strip("-") or "backbone"
    return f"{method}-{safe}-{time.strftime('%Y%m%d-%H%M%S')}"


class RunDir:
    """One folder per run: `runs/<name>/`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock_file = None
        self.sinks: list = []  # also get every metrics row and the final eval (`mwa_cli.train.metric_sinks`)

    def __getstate__(self) -> dict:  # sent to the other ranks, which never hold the lock nor write metrics
        return dict(self.__dict__, _lock_file=None, sinks=[])

    # ------------------------------------------------------------------ paths
    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def timing_path(self) -> Path:
        return self.path / "timing.json"

    @property
    def eval_path(self) -> Path:
        return self.path / "eval.json"

    @property
    def topk_path(self) -> Path:
        return self.path / "eval_topk.json"

    @property
    def checkpoint_root(self) -> Path:
        return self.path / "checkpoint"

    # ------------------------------------------------------------------ creation
    @classmethod
    def create(cls, out: str | Path, name: str) -> "RunDir":
        """A new run folder `out/name`, marked as mwa's and locked by this process. An existing folder is reused
        only when it is an mwa run stopped before its first checkpoint; anything else is refused untouched."""
        path = Path(out) / check_run_name(name)
        if path.exists() and not path.is_dir():
            raise ConfigError(f"{path} exists and is not a folder", hint="pick another --name or --out")
        if not is_empty(path) and not is_run_folder(path):
            raise ConfigError(f"{path} exists and is not an mwa run folder: nothing in it is changed",
                              hint="pick another --name or --out")
        path.mkdir(parents=True, exist_ok=True)
        run = cls(path)
        run.lock()
        # (a checkpoint folder holding only a half-written first checkpoint, removed by lock(), is no start)
        started = any((path / "checkpoint" / n).exists() for n in ("last", "last.old")) or \
            (path / "adapter_model.safetensors").exists()
        if started:
            run.unlock()
            raise ConfigError(f"run folder {path} already exists",
                              hint=f"continue it with `mwa train --resume {path}`, or pick another --name")
        # a start that was stopped before its first checkpoint: nothing to keep, start it again
        for leftover in ("config.json", "metrics.jsonl", "timing.json", "eval.json", "eval_topk.json"):
            (path / leftover).unlink(missing_ok=True)
        write_marker(path, "run")
        return run

    def lock(self) -> None:
        """Hold the run's lock for this process's life: a second `mwa train` on the same run is refused."""
        self._lock_file = FolderLock(self.path, "run", hint="wait for that run to end (or stop it), or pick "
                                                            "another --name").acquire()
        # the lock makes this the run's only writer: what another process left half-written (killed, disk full)
        # is nobody's now
        remove_temp(self.path, TEMP_PATTERNS)

    def unlock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.release()
            self._lock_file = None

    # ------------------------------------------------------------------ files
    def write_config(self, config: dict) -> None:
        atomic_write_json(self.config_path, config)

    def read_config(self) -> dict:
        try:
            cfg = load_json(self.config_path)
        except InputFileError as exc:
            raise ConfigError(f"cannot read {printable(self.config_path)}: {exc.message}",
                              hint="is this a run folder made by `mwa train`?") from None
        if not isinstance(cfg, dict):
            raise ConfigError(f"{self.config_path} holds {type(cfg).__name__}, not the object mwa writes",
                              hint="it was changed by hand or by another program: restore it, or start a new run")
        return cfg

    def append_metrics(self, row: dict) -> None:
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json_line(row))
        for sink in self.sinks:
            sink.write(row)

    def read_metrics(self) -> list[dict]:
        """metrics.jsonl's rows; a line that is not a row mwa writes (cut by a kill, edited) is left out."""
        return read_metrics_rows(self.metrics_path)

    def truncate_metrics(self, after_step: int) -> None:
        """On resume: drop rows logged after the checkpoint's step (they will be logged again)."""
        rows = [r for r in self.read_metrics() if int(r.get("step", 0)) <= after_step]
        atomic_write_text(self.metrics_path, "".join(json_line(r) for r in rows))

    def write_timing(self, timing: dict) -> None:
        missing = [k for k in TIMING_KEYS if k not in timing]
        if missing:  # programming error: the contract must hold
            raise ValueError(f"timing.json lacks {missing}")
        atomic_write_json(self.timing_path, timing)

    def write_eval(self, eval_dict: dict, topk: dict | None = None, ranks=None) -> None:
        """eval.json (+ eval_topk.json, + eval_ranks.json from a `QueryRanks` for the report's intervals)."""
        atomic_write_json(self.eval_path, eval_dict)
        if topk is not None:
            atomic_write_json(self.topk_path, topk)
        if ranks is not None:
            from mwa_cli.eval.bootstrap import save_ranks

            save_ranks(self.path, eval_dict["split"], ranks)
        for sink in self.sinks:
            sink.final(eval_dict)


def base_config_record(cfg_dict: dict, *, data_dir: str, dataset_hash: str | None, command: str) -> dict:
    """config.json: every option with its value + command, data_dir, dataset_hash, mwa_version."""
    rec = dict(cfg_dict)
    rec["command"] = command
    rec["data_dir"] = data_dir
    rec["dataset_hash"] = dataset_hash
    rec["mwa_version"] = __version__
    return rec
