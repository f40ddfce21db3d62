"""`mwa export`, `mwa index --model` and `mwa search` write nothing outside `--out` and mwa's own cache: with HOME
pointed at an empty folder, onnxruntime's telemetry store (~/.cache/Microsoft/DeveloperTools/.onnxruntime) is never
created. Real commands in real processes, the real onnxruntime."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.adapter_runs import perturbed_adapter_run
from tests.helpers.paths import REPO
from tests.unit.export.test_onnx import photos

MWA_OWN = (".cache/mwa", ".config/mwa")  # mwa's cache and settings, under HOME by default


def _written_under(home: Path) -> list[str]:
    return sorted(str(p.relative_to(home)) for p in home.rglob("*")
                  if p.is_file() and not str(p.relative_to(home)).startswith(MWA_OWN))


@pytest.mark.slow  # a real subprocess or several commands: seconds
def test_export_index_and_search_write_nothing_outside_out(tmp_path):
    run = perturbed_adapter_run(tmp_path / "run", "beit3-tiny-test", "mwa")
    pics = photos(tmp_path / "photos", n=3)
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MWA_", "ORT_", "XDG_"))}
    env.update(HOME=str(home), PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    for args in (["export", run, "--format", "onnx", "--out", tmp_path / "exp"],
                 ["index", pics, "--model", tmp_path / "exp", "--out", tmp_path / "idx"],
                 ["search", "a scratch", "--index", tmp_path / "idx", "--top", "1"],
                 ["search", "--image", pics / "p0.png", "--index", tmp_path / "idx", "--top", "1"]):
        done = subprocess.run([sys.executable, "-m", "mwa_cli", *map(str, args)], env=env, capture_output=True,
                              text=True, timeout=300, cwd=str(tmp_path))
        assert done.returncode == 0, done.stdout + done.stderr
        assert _written_under(home) == [], args[0]
