"""What the user sees when something goes wrong: MWA_DEBUG=0/false/no/off keep the traceback hidden (only a
real "on" shows it), and a run stopped by a real SIGTERM leaves its bar at the step it stopped at, out of the
planned total, marked interrupted (it showed "10/10 done interrupted")."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import typer
from typer.testing import CliRunner

from mwa_cli.commands.common import guarded
from tests.helpers.paths import REPO

runner = CliRunner()


def _failing_app() -> typer.Typer:
    app = typer.Typer()

    @app.command()
    @guarded
    def boom() -> None:
        raise RuntimeError("a bug")

    return app


@pytest.mark.parametrize("value", ["", "0", "false", "FALSE", "no", "off", " No "])
def test_mwa_debug_off_values_hide_the_traceback(value, monkeypatch):
    monkeypatch.setenv("MWA_DEBUG", value)
    res = runner.invoke(_failing_app(), [])
    assert res.exit_code == 1
    assert "internal error: RuntimeError: a bug" in res.output and "Traceback" not in res.output


@pytest.mark.parametrize("value", ["1", "yes", "true"])
def test_mwa_debug_on_raises_the_exception(value, monkeypatch):
    monkeypatch.setenv("MWA_DEBUG", value)
    res = runner.invoke(_failing_app(), [])
    assert isinstance(res.exception, RuntimeError)


@pytest.mark.slow  # a real subprocess or several commands: seconds
def test_a_run_stopped_by_sigterm_keeps_its_step_on_the_bar(train_data_dir, train_tokenizer, tmp_path):
    out = tmp_path / "runs"
    args = [sys.executable, "-m", "mwa_cli", "train", str(train_data_dir), "--backbone", "beit3-tiny-test",
            "--tokenizer", str(train_tokenizer), "--out", str(out), "--name", "r", "--steps", "5000",
            "--batch-size", "8", "--val-evals", "0", "--workers", "0", "--device", "cpu", "--log-every", "1"]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", COLUMNS="120")
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = out / "r" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        rows = metrics.read_text().splitlines() if metrics.is_file() else []
        if sum(json.loads(r).get("kind") == "train" for r in rows if r.strip()) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    text = " ".join(err.split())
    stopped = re.search(r"stopped at step (\d+) of 5000", text)
    assert stopped, err[-3000:]
    assert f"{stopped.group(1)}/5000" in text and "interrupted" in text, err[-3000:]
    n = stopped.group(1)
    assert "5000/5000" not in text and not re.search(rf"\b{n}/{n}\b", text)  # the bar did not jump to its end
