"""`mwa train --devices 2` on the CPU (gloo, 2 processes): the same command twice gives the same adapter, and the
feature cache works with several devices, through SIGTERM and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers.paths import HELPERS, REPO

pytestmark = pytest.mark.slow
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{REPO}{os.pathsep}{HELPERS}")
COMMON = ["--backbone", "beit3-tiny-test", "--batch-size", "8", "--lr", "1e-3", "--seed", "0", "--device", "cpu",
          "--devices", "2", "--quiet"]


def _train(args, delay: float = 0.0, **kw):
    """`mwa train` (through fault_mwa: `delay` seconds of sleep per step stand for a slower machine)."""
    env = dict(ENV, FAULT_SPEC=json.dumps({"step_delay": delay} if delay else {}))
    return subprocess.Popen([sys.executable, "-m", "fault_mwa", "train", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=str(REPO), **kw)


def _finish(proc, timeout: float = 300) -> str:
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return err


def _rows(run, kind: str) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


def test_two_runs_of_one_command_publish_the_same_adapter(tmp_path, train_data_dir, train_tokenizer):
    """Default validation (cost-aware, no budget) and early stopping on; one run's steps are slowed down, as a
    slower or busier machine would: the checks, and so the best adapter published, must not move."""
    out = tmp_path / "runs"
    args = [str(train_data_dir), "--tokenizer", str(train_tokenizer), "--out", str(out), "--steps", "30", *COMMON]
    _finish(_train(args + ["--name", "fast"]))
    _finish(_train(args + ["--name", "slow"], delay=0.15))
    fast, slow = out / "fast", out / "slow"
    checks = [r["step"] for r in _rows(fast, "eval")]
    assert [r["step"] for r in _rows(slow, "eval")] == checks and len(checks) > 2
    assert [r["loss"] for r in _rows(slow, "train")] == [r["loss"] for r in _rows(fast, "train")]
    a, b = load_file(fast / "adapter_model.safetensors"), load_file(slow / "adapter_model.safetensors")
    assert set(a) == set(b)
    for k in a:  # bit-identical, not close
        assert torch.equal(a[k], b[k]), k
    best = [json.loads((run / "timing.json").read_text())["best"]["step"] for run in (fast, slow)]
    assert best[0] == best[1]


def test_feature_cache_on_two_devices_survives_sigterm_and_resume(tmp_path, train_data_dir, train_tokenizer):
    out = tmp_path / "runs"
    args = [str(train_data_dir), "--tokenizer", str(train_tokenizer), "--out", str(out), "--steps", "16",
            "--checkpoint-every", "4", "--val-evals", "1", "--feature-cache", "auto", "--option", "layers=top-1",
            "--option", "dropout=0", "--drop-path", "0", "--log-every", "1", *COMMON]
    _finish(_train(args + ["--name", "ref"]))
    run = out / "sig"
    proc = _train(args + ["--name", "sig"], delay=0.3)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if (run / "checkpoint" / "last" / "meta.json").is_file():
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 143, err[-3000:]
    assert not list(run.glob("feature_cache_*")), "cache files left behind"
    step = json.loads((run / "checkpoint" / "last" / "meta.json").read_text())["step"]
    assert 4 <= step < 16
    resumed = subprocess.run([sys.executable, "-m", "mwa_cli", "train", "--resume", str(run), "--devices", "2",
                              "--quiet"], env=ENV, capture_output=True, text=True, timeout=300, cwd=str(REPO))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    steps = [r["step"] for r in _rows(run, "train")]
    assert steps == list(range(1, 17))
    timing = json.loads((run / "timing.json").read_text())
    assert timing["feature_cache"]["images"] > 0 and timing["n_devices"] == 2
    a, b = load_file(out / "ref" / "adapter_model.safetensors"), load_file(run / "adapter_model.safetensors")
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=2e-4, rtol=1e-3, msg=k)
    assert not list(run.glob("feature_cache_*")) and not list((out / "ref").glob("feature_cache_*"))
