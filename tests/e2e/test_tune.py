"""`mwa tune` end to end on beit3-mini through the real command line: a tiny tune of three trials interrupted
in its second trial by a real signal, then run again: the finished trial is kept as it was, the interrupted one
continues from its checkpoint, the study goes on to its third trial, and the recommendation is written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mwa_cli.models.presets import MINI_DIR
from mwa_cli.train.config import load_config_file
from tests.helpers.data_dir import make_train_data_dir
from tests.helpers.paths import HELPERS, REPO

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (MINI_DIR / "weights.safetensors").is_file(),
                                 reason="built-in beit3-mini weights are not installed")]


def _args(data: Path, out: Path) -> list[str]:
    base = out.parent / "base.toml"  # fixed options of every trial: keep the captions' <unk> (cache allowed)
    base.write_text('extend_vocab = "off"\n', encoding="utf-8")
    return ["tune", str(data), "--method", "mwa", "--backbone", "beit3-mini", "--device", "cpu",
            "--trial-steps", "12", "--trials", "3", "--config", str(base), "--out", str(out), "--name", "tiny"]


def _env(**fault) -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="80", PYTHONPATH=f"{REPO}{os.pathsep}{HELPERS}",
                FAULT_SPEC=json.dumps(fault))


def _train_steps(run: Path) -> list[int]:
    path = run / "metrics.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []
    return [r["step"] for r in rows if r.get("kind") == "train"]


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_in_a_trial_keeps_the_finished_ones_and_the_next_run_continues(tmp_path, sig, code):
    data = make_train_data_dir(tmp_path / "data", n_images=40, size=64)
    out = tmp_path / "runs"
    trials = out / "tiny" / "trials"
    # every step sleeps, so the signal lands inside the second trial's training
    proc = subprocess.Popen([sys.executable, "-m", "fault_mwa", *_args(data, out)], env=_env(step_delay=0.2),
                            cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if any(s >= 3 for s in _train_steps(trials / "mwa-t001")):
            proc.send_signal(sig)
            break
        time.sleep(0.05)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr[-3000:]
    text = " ".join(stderr.split())
    assert "trial mwa-t001 stopped" in text and "run the same `mwa tune` command again" in text
    assert (trials / "mwa-t001" / "checkpoint" / "last").is_dir()  # resumable
    assert not (trials / "mwa-t002").exists()
    finished = (trials / "mwa-t000" / "eval.json").read_bytes()
    stopped_at = max(_train_steps(trials / "mwa-t001"))
    assert stopped_at < 12

    again = subprocess.run([sys.executable, "-m", "mwa_cli", *_args(data, out)], env=_env(), cwd=str(REPO),
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    log = " ".join(again.stderr.split())
    assert "mwa-t001" in log and "continuing the interrupted trial" in log
    assert (trials / "mwa-t000" / "eval.json").read_bytes() == finished
    steps = _train_steps(trials / "mwa-t001")
    assert steps == sorted(set(steps)) and steps[-1] == 12  # continued where it stopped, no step twice
    assert (trials / "mwa-t002" / "eval.json").is_file()
    result = json.loads((out / "tiny" / "tune.json").read_text())["result"]["mwa"]
    assert result["chosen"] in ("mwa-t000", "mwa-t001", "mwa-t002") and result["stopped"].startswith("3 trials")
    config = out / "tiny" / "recommended-mwa.toml"
    assert load_config_file(config)["method"] == "mwa"
    assert f"mwa train {data} --config {config}" in " ".join(again.stdout.split())
    table = [x for x in again.stdout.splitlines() if x.startswith(("trial ", " mwa-t", "→mwa-t"))]
    assert len(table) == 4 and max(len(x) for x in table) <= 80  # the table fits 80 columns (paths: unwrapped)
    assert "→mwa-t00" in again.stdout and (out / "tiny" / "tune.html").is_file()
