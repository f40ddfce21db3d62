"""mwa: adapt BEiT-3 to your inspection photos with MultiWay-Adapter and measure what it saves.

The Python API (docs/api.md has a worked example): the functions the commands call, returning what they print
with ``--json``. Each is imported at its first use, so ``import mwa_cli`` stays cheap (no torch).

    from mwa_cli import TrainConfig, build_index, evaluate, load_run, make_report, prepare_dataset, search, train
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> "module:attribute"; `train` and `search` are packages that can be called (mwa_cli/callable_package.py)
_API = {
    "prepare_dataset": "mwa_cli.data.prepare:prepare_dataset",
    "TrainConfig": "mwa_cli.train.config:TrainConfig",
    "RunResult": "mwa_cli.train.loop:RunResult",
    "train": "mwa_cli.train:",
    "evaluate": "mwa_cli.eval.evaluate:evaluate_path",
    "load_run": "mwa_cli.runs:load_run",
    "make_report": "mwa_cli.report.api:make_report",
    "build_index": "mwa_cli.search.build:build_index",
    "search": "mwa_cli.search:",
    "export_onnx": "mwa_cli.export.onnx:export_onnx",
}
__all__ = ["__version__", *_API]

if TYPE_CHECKING:
    from mwa_cli import search, train
    from mwa_cli.data.prepare import prepare_dataset
    from mwa_cli.eval.evaluate import evaluate_path as evaluate
    from mwa_cli.export.onnx import export_onnx
    from mwa_cli.report.api import make_report
    from mwa_cli.runs import load_run
    from mwa_cli.search.build import build_index
    from mwa_cli.train.config import TrainConfig
    from mwa_cli.train.loop import RunResult


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'mwa_cli' has no attribute {name!r}")
    module_name, attribute = _API[name].split(":")
    module = importlib.import_module(module_name)
    value = getattr(module, attribute) if attribute else module
    if attribute:
        globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
