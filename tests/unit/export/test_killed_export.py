"""An `mwa export` killed with SIGKILL half-way leaves a folder that never blocks the next export there (it used to
be refused as "not an mwa export"), and is never taken for a finished export. A real process, really killed after
its first graph file is written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from mwa_cli.cli import app
from mwa_cli.export.manifest import is_export_dir
from mwa_cli.export.onnx import IMAGE_FILE, MANIFEST_FILE
from tests.helpers.adapter_runs import perturbed_adapter_run
from tests.helpers.paths import REPO

runner = CliRunner()

KILLED_AFTER_THE_FIRST_GRAPH = """
import os, signal, sys
import mwa_cli.export.onnx as onnx
write = onnx._export_graph
def write_then_die(*args, **kwargs):
    write(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
onnx._export_graph = write_then_die
from mwa_cli.cli import main
sys.argv = ["mwa", *sys.argv[1:]]
main()
"""


@pytest.mark.slow  # a real subprocess or several commands: seconds
def test_an_export_killed_half_way_does_not_block_the_next_one(tmp_path):
    run = perturbed_adapter_run(tmp_path / "run", "beit3-tiny-test", "mwa")
    out = tmp_path / "exp"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", KILLED_AFTER_THE_FIRST_GRAPH, "export", str(run), "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr
    assert (out / IMAGE_FILE).is_file() and not (out / MANIFEST_FILE).exists()  # half-written, as a kill leaves it
    assert not is_export_dir(out)  # what loads an export refuses it
    res = runner.invoke(app, ["export", str(run), "--out", str(out)])  # no --overwrite: nothing finished was there
    assert res.exit_code == 0, res.output
    assert (out / MANIFEST_FILE).is_file()
