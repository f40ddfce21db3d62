"""No hang, ever: a failure in a DataLoader worker, in one of two training processes, or during a resume ends the
whole command quickly, with a clear message (no traceback), a non-zero exit, the resume command when a checkpoint
exists, and no process left behind. Real subprocesses (`python -m fault_mwa`, the CLI with injected faults), the
GPU defaults that run on a CPU (several loader workers, the multi-process launcher with gloo).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bench.benchlib import leftover_processes
from tests.helpers.paths import HELPERS, REPO

LIMIT_S = 60.0  # from the fault to the command's exit

pytestmark = pytest.mark.slow


def _common(data, tok, out, name) -> list[str]:
    return [str(data), "--backbone", "beit3-tiny-test", "--tokenizer", str(tok), "--out", str(out), "--name", name,
            "--batch-size", "8", "--lr", "1e-3", "--seed", "0", "--log-every", "1", "--val-evals", "0",
            "--device", "cpu", "--workers", "2", "--quiet"]


def _run(args: list[str], spec: dict, stamp: Path, timeout: float = 240) -> tuple[subprocess.CompletedProcess, float]:
    """Run `python -m fault_mwa train ...`; return the result and seconds from the (first) fault to the exit."""
    spec = dict(spec, stamp=str(stamp))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{REPO}{os.pathsep}{HELPERS}",
               FAULT_SPEC=json.dumps(spec))
    proc = subprocess.run([sys.executable, "-m", "fault_mwa", "train", *args], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=str(REPO))
    end = time.time()
    fired = [float(x) for x in stamp.read_text().split()] if stamp.is_file() else []
    return proc, (end - min(fired)) if fired else float("nan")


def _assert_clean_failure(proc, seconds: float, marker: str) -> None:
    assert proc.returncode not in (0, None), proc.stderr[-3000:]
    assert seconds < LIMIT_S, f"{seconds:.1f} s from the fault to the exit"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    time.sleep(0.5)
    left = leftover_processes(marker)
    assert not left, [f"{pid}: {cmd[:200]}" for pid, cmd in left]


def test_the_leftover_scan_sees_a_live_process_and_not_a_dead_one(tmp_path):
    marker = str(tmp_path / "runs")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", marker])
    try:
        deadline = time.monotonic() + 10
        while not leftover_processes(marker) and time.monotonic() < deadline:  # until the child has exec'd
            time.sleep(0.05)
        assert [pid for pid, _ in leftover_processes(marker)] == [proc.pid]
        proc.kill()
        deadline = time.monotonic() + 10
        while leftover_processes(marker) and time.monotonic() < deadline:  # a zombie until reaped: not counted
            time.sleep(0.05)
        assert leftover_processes(marker) == []
    finally:
        proc.kill()
        proc.wait()


def test_worker_failure_ends_the_run_with_a_resume_hint(tmp_path, train_data_dir, train_tokenizer):
    out = tmp_path / "runs"
    args = _common(train_data_dir, train_tokenizer, out, "w") + ["--steps", "12", "--checkpoint-every", "3"]
    proc, seconds = _run(args, {"worker_raise_at": 6}, tmp_path / "stamp")
    _assert_clean_failure(proc, seconds, str(out))
    assert proc.returncode == 1
    assert "loading the training batch of step 6 failed" in proc.stderr and "IndexError" in proc.stderr
    assert f"mwa train --resume {out / 'w'}" in proc.stderr  # the checkpoint of step 3 is kept
    # the run resumes and finishes from that checkpoint
    ok = subprocess.run([sys.executable, "-m", "mwa_cli", "train", "--resume", str(out / "w"), "--quiet"],
                        env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO)), capture_output=True,
                        text=True, timeout=240, cwd=str(REPO))
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert (out / "w" / "eval.json").is_file()


def test_a_failing_rank_ends_every_process(tmp_path, train_data_dir, train_tokenizer):
    out = tmp_path / "runs"
    args = _common(train_data_dir, train_tokenizer, out, "r") + ["--steps", "12", "--devices", "2"]
    proc, seconds = _run(args, {"rank": 1, "rank_raise_at": 4}, tmp_path / "stamp")
    _assert_clean_failure(proc, seconds, str(out))
    assert "training process 1 of 2 exited with code 1" in proc.stderr, proc.stderr[-3000:]
    assert "injected fault in a training process" in proc.stderr  # its own last words are shown
    assert "no checkpoint had been written" in proc.stderr


def test_a_crash_during_a_resume_ends_every_process(tmp_path, train_data_dir, train_tokenizer):
    out = tmp_path / "runs"
    run = out / "c"
    args = _common(train_data_dir, train_tokenizer, out, "c") + ["--steps", "10", "--checkpoint-every", "2",
                                                                  "--devices", "2"]
    first, seconds = _run(args, {"rank": 1, "rank_exit_at": 4}, tmp_path / "stamp1")
    _assert_clean_failure(first, seconds, str(out))
    assert "training process 1 of 2 exited with code 77" in first.stderr, first.stderr[-3000:]
    assert f"mwa train --resume {run} --devices 2" in first.stderr  # the checkpoint of step 2
    # the resume itself fails: a loader worker of rank 0 at the first resumed step
    again, seconds = _run(["--resume", str(run), "--devices", "2", "--quiet"], {"worker_raise_at": 3},
                          tmp_path / "stamp2")
    _assert_clean_failure(again, seconds, str(run))
    assert "loading the training batch of step 3 failed" in again.stderr, again.stderr[-3000:]
    # a clean resume then finishes the run
    ok = subprocess.run([sys.executable, "-m", "mwa_cli", "train", "--resume", str(run), "--devices", "2",
                         "--quiet"], env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO)),
                        capture_output=True, text=True, timeout=240, cwd=str(REPO))
    assert ok.returncode == 0, ok.stderr[-3000:]
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()
             if json.loads(x)["kind"] == "train"]
    assert steps[-1] == 10 and steps == sorted(set(steps))
    # ... with the weights of an uninterrupted 2-process run (dropout on: every rank's draws are per step)
    ref = subprocess.run([sys.executable, "-m", "mwa_cli", "train",
                          *_common(train_data_dir, train_tokenizer, out, "ref"), "--steps", "10",
                          "--checkpoint-every", "2", "--devices", "2"],
                         env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO)), capture_output=True,
                         text=True, timeout=240, cwd=str(REPO))
    assert ref.returncode == 0, ref.stderr[-3000:]
    a, b = load_file(run / "adapter_model.safetensors"), load_file(out / "ref" / "adapter_model.safetensors")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
