"""The run directory's files, exactly as docs/formats.md specifies them (config, metrics, timing, eval)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from mwa_cli import __version__
from mwa_cli.errors import ConfigError
from mwa_cli.fileio import atomic_write_json, atomic_write_text, json_line

TIMING_KEYS = ("wall_s", "train_s", "eval_s", "checkpoint_s", "steps", "samples", "samples_per_s", "device_hours",
               "device_type", "device_name", "n_devices", "peak_mem_gib", "data_wait_fraction", "budget_s", "torch",
               "mwa", "trainable_params", "total_params", "estimated")


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def default_run_name(method: str, backbone: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", backbone).strip("-") or "backbone"
    return f"{method}-{safe}-{time.strftime('%Y%m%d-%H%M%S')}"


class RunDir:
    """One folder per run: `runs/<name>/`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

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
        path = Path(out) / name
        if path.exists() and any(path.iterdir()):
            started = (path / "checkpoint").exists() or (path / "adapter_model.safetensors").exists()
            if started:
                raise ConfigError(f"run folder {path} already exists",
                                  hint=f"continue it with `mwa train --resume {path}`, or pick another --name")
            # a start that was stopped before its first checkpoint: nothing to keep, start it again
            for leftover in ("config.json", "metrics.jsonl", "timing.json", "eval.json", "eval_topk.json"):
                (path / leftover).unlink(missing_ok=True)
        path.mkdir(parents=True, exist_ok=True)
        return cls(path)

    # ------------------------------------------------------------------ files
    def write_config(self, config: dict) -> None:
        atomic_write_json(self.config_path, config)

    def read_config(self) -> dict:
        try:
            return json.loads(self.config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {self.config_path}: {exc}",
                              hint="is this a run folder made by `mwa train`?") from None

    def append_metrics(self, row: dict) -> None:
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json_line(row))

    def read_metrics(self) -> list[dict]:
        if not self.metrics_path.is_file():
            return []
        rows = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except ValueError:  # a line cut by a kill
                continue
        return rows

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


def base_config_record(cfg_dict: dict, *, data_dir: str, dataset_hash: str | None, command: str) -> dict:
    """config.json: every option with its value + command, data_dir, dataset_hash, mwa_version."""
    rec = dict(cfg_dict)
    rec["command"] = command
    rec["data_dir"] = data_dir
    rec["dataset_hash"] = dataset_hash
    rec["mwa_version"] = __version__
    return rec
