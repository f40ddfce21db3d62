"""Distributed training on the CPU: 2 processes, gloo backend, the tiny backbone.

* gradient equality: one global batch through the 2-rank DDP path (rank-strided shards, embeddings gathered with
  gradients, global negatives) gives the single-process gradients (fp32 tolerance), for mwa / lora / full-ft, also
  with micro-batches (against the unsplit single-process batch); two optimizer steps give the same weights.
* `mwa train --devices 2 --device cpu` end to end: the normal run directory, written once by rank 0; the final
  weights equal a single-process run's on the same global batches; `mwa eval` of the run gives eval.json's numbers.
* Ctrl-C to the launcher: one checkpoint, exit 130 on all ranks; the run resumes on ONE device and finishes.
"""

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
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
COMMON = ["--backbone", "beit3-tiny-test", "--batch-size", "8", "--lr", "1e-3", "--seed", "0", "--log-every", "1",
          "--val-evals", "1", "--workers", "2", "--drop-path", "0", "--option", "dropout=0", "--device", "cpu",
          "--quiet"]


def test_gradients_match_single_process(tmp_path):
    from mwa_cli.train.trainer import build_trainer
    from tests.helpers.dist_grad_worker import BATCH, CASES

    out = tmp_path / "dist.pt"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(HELPERS / "dist_grad_worker.py"), str(out)], env=ENV, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = torch.load(out)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for method, micro in CASES:
            r = res[f"{method}-{micro}"]
            t = build_trainer("beit3-tiny-test", method,
                              method_options=None if method == "full-ft" else {"dropout": 0.0}, device="cpu",
                              precision="fp32", drop_path=0.0, seed=0, total_steps=10)  # micro-batches or not:
            # the 2 ranks' micro-batches train the loss of the single process's unsplit batch (GradCache)
            b = t.random_batch(BATCH, seed=1)
            loss = t._forward_backward(t.pixels(b), b["input_ids"], b["padding_mask"])
            assert abs(float(loss) - r["loss"]) < 1e-5, (method, micro)
            grads = {n: p.grad for n, p in t.model.named_parameters() if p.requires_grad and p.grad is not None}
            assert set(grads) == set(r["grads"]), method
            for n, g in grads.items():
                torch.testing.assert_close(r["grads"][n], g, atol=2e-5, rtol=1e-4, msg=f"{method} {micro} {n}")
            t.optimizer.zero_grad(set_to_none=True)
            losses = [float(t.step(t.random_batch(BATCH, seed=10 + s))) for s in range(2)]
            assert losses == pytest.approx(r["step_losses"], abs=1e-5)
            for n, p in t.model.named_parameters():
                if p.requires_grad:  # Adam turns fp32 round-off of near-zero grads into up to ~lr: atol = lr
                    torch.testing.assert_close(r["params"][n], p.detach(), atol=2e-4, rtol=1e-3)
    finally:
        torch.set_num_threads(before)


def _run_cli(args, **kw):
    return subprocess.run([sys.executable, "-m", "mwa_cli", "train", *args], env=ENV, capture_output=True,
                          text=True, timeout=300, cwd=str(REPO), **kw)


def test_devices_2_end_to_end_matches_one_process(tmp_path, train_data_dir, train_tokenizer):
    out = tmp_path / "runs"
    args = [str(train_data_dir), "--tokenizer", str(train_tokenizer), "--out", str(out), "--steps", "6",
            "--checkpoint-every", "3", *COMMON]
    two = _run_cli(args + ["--name", "two", "--devices", "2"])
    assert two.returncode == 0, two.stderr[-3000:]
    one = _run_cli(args + ["--name", "one"])
    assert one.returncode == 0, one.stderr[-3000:]
    run2, run1 = out / "two", out / "one"
    for f in ("config.json", "metrics.jsonl", "timing.json", "eval.json", "eval_topk.json",
              "adapter_model.safetensors", "adapter_config.json", "checkpoint/last/state.pt"):
        assert (run2 / f).is_file(), f
    assert not list(run2.rglob(".*tmp*")), "stray temporary files"
    rows = [json.loads(x) for x in (run2 / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in rows if r["kind"] == "train"]
    assert train_steps == [1, 2, 3, 4, 5, 6]  # written once (rank 0), not once per rank
    timing = json.loads((run2 / "timing.json").read_text())
    assert timing["n_devices"] == 2 and timing["steps"] == 6
    config = json.loads((run2 / "config.json").read_text())
    assert config["distributed"]["world_size"] == 2 and "--devices" in config["command"]
    # same global batches, same gradients → the same weights as one process (fp32 all-reduce round-off)
    w1, w2 = load_file(run1 / "adapter_model.safetensors"), load_file(run2 / "adapter_model.safetensors")
    assert set(w1) == set(w2)
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], atol=2e-4, rtol=1e-3, msg=k)
    loss1 = [r["loss"] for r in map(json.loads, (run1 / "metrics.jsonl").read_text().splitlines())
             if r["kind"] == "train"]
    assert [r["loss"] for r in rows if r["kind"] == "train"] == pytest.approx(loss1, abs=1e-4)
    # distributed evaluation (rank 0) = single-device evaluation of the same weights
    ev = subprocess.run([sys.executable, "-m", "mwa_cli", "eval", str(run2), "--json"], env=ENV,
                        capture_output=True, text=True, timeout=300)
    assert ev.returncode == 0, ev.stderr[-2000:]
    mine = json.loads((run2 / "eval.json").read_text())
    again = json.loads(ev.stdout) if ev.stdout.strip().startswith("{") else json.loads((run2 / "eval.json").read_text())
    for key in ("rsum", "mean_recall", "i2t", "t2i", "numerics"):  # one number per run: identical, not close
        assert again[key] == mine[key], key


def test_ctrl_c_checkpoints_once_and_resumes_on_one_device(tmp_path, train_data_dir, train_tokenizer):
    out = tmp_path / "runs"
    run = out / "sig"
    args = [str(train_data_dir), "--tokenizer", str(train_tokenizer), "--out", str(out), "--steps", "40",
            "--checkpoint-every", "100", "--name", "sig", "--devices", "2", *COMMON]
    env = dict(ENV, PYTHONPATH=f"{REPO}{os.pathsep}{HELPERS}", FAULT_SPEC=json.dumps({"step_delay": 0.3}))
    proc = subprocess.Popen([sys.executable, "-m", "fault_mwa", "train", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=str(REPO))
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        m = run / "metrics.jsonl"
        if m.is_file() and sum('"train"' in x for x in m.read_text().splitlines()) >= 2:
            break
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)  # what Ctrl-C does to the launcher; it forwards it once to every rank
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 130, err[-3000:]
    assert "Resume with" in err
    meta = json.loads((run / "checkpoint" / "last" / "meta.json").read_text())
    assert 2 <= meta["step"] < 40
    state = torch.load(run / "checkpoint" / "last" / "state.pt", weights_only=True)
    assert state["world_size"] == 2
    acc = state["acc"]  # device-seconds so far: the first segment's wall time on 2 devices
    assert acc["device_prev_s"] == pytest.approx(2 * acc["wall_prev_s"], abs=0.5)
    res = subprocess.run([sys.executable, "-m", "mwa_cli", "train", "--resume", str(run), "--quiet"], env=ENV,
                         capture_output=True, text=True, timeout=300, cwd=str(REPO))
    assert res.returncode == 0, res.stderr[-3000:]
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()
             if json.loads(x)["kind"] == "train"]
    assert steps == sorted(set(steps)) and steps[-1] == 40
    timing = json.loads((run / "timing.json").read_text())
    assert timing["n_devices"] == 1
    # GPU-hours count each segment at its own device count (2, then 1), not the whole run at the last one's
    expected = acc["device_prev_s"] + (timing["wall_s"] - acc["wall_prev_s"])
    assert timing["device_hours"] * 3600 == pytest.approx(expected, abs=1.0)
    assert timing["device_hours"] * 3600 > timing["wall_s"] + 0.5 * acc["wall_prev_s"]


def test_a_signal_that_lands_during_the_agreement_is_kept_for_the_next_step():
    """The all-reduce that agrees on stopping takes time; a SIGTERM arriving meanwhile must not be dropped."""
    from mwa_cli.train.signals import SignalFlag, agree_stop

    class Ranks:  # rank 0's view: the other rank had no signal when it joined; ours arrives mid-all-reduce
        enabled = True

        def __init__(self, flag):
            self.flag, self.calls = flag, 0

        def agree(self, signum, main_flags=()):
            self.calls += 1
            if self.calls == 1:
                sent = signum
                self.flag.signum = signal.SIGTERM  # the handler runs while we wait in the collective
                return sent, tuple(main_flags)
            return signum, tuple(main_flags)

    flag = SignalFlag()
    ranks = Ranks(flag)
    assert agree_stop(ranks, flag, False, False) == (None, False, False)  # this step still runs everywhere
    assert flag.signum == signal.SIGTERM  # ... and the signal is not lost
    assert agree_stop(ranks, flag, False, False)[0] == signal.SIGTERM  # next step: every rank stops


def test_devices_parsing_and_batch_split():
    from mwa_cli.errors import ConfigError
    from mwa_cli.train import launcher
    from mwa_cli.train.dist.sharding import check_batch_split, shard_slice

    assert launcher.parse_devices("2", "cpu") == (2, None)
    with pytest.raises(ConfigError):
        launcher.parse_devices("0,1", "cpu")
    with pytest.raises(ConfigError):
        launcher.parse_devices("two", "cpu")
    assert launcher.strip_devices(["train", "x", "--devices", "2", "--devices=3", "--quiet"]) == ["train", "x", "--quiet"]
    with pytest.raises(ConfigError, match="cannot be split evenly"):
        check_batch_split(30, 4)
    idx = torch.arange(8)
    parts = [idx[shard_slice(r, 2)] for r in range(2)]
    assert sorted(torch.cat(parts).tolist()) == list(range(8)) and parts[0].tolist() == [0, 2, 4, 6]


def test_multi_positive_targets_with_global_negatives_match_single_process(tmp_path):
    """Group ids gathered across 2 gloo ranks: the mean loss and the embedding / parameter gradients equal one
    process computing the multi-positive loss over the whole global batch."""
    from mwa_cli.train.loss import contrastive_loss, sigmoid_loss
    from mwa_cli.train.trainer import build_trainer
    from tests.helpers.dist_multipos_worker import BATCH, GROUPS, embeddings

    out = tmp_path / "multipos.pt"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(HELPERS / "dist_multipos_worker.py"), str(out)], env=ENV, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = torch.load(out)
    for kind in ("softmax", "sigmoid"):
        img, txt = (t.clone().requires_grad_(True) for t in embeddings())
        scale = torch.tensor(2.0)
        loss = (contrastive_loss(img, txt, scale, GROUPS) if kind == "softmax"
                else sigmoid_loss(img, txt, scale, torch.tensor(-1.0), GROUPS))
        loss.backward()
        assert float(loss.detach()) == pytest.approx(res[kind]["loss"], abs=1e-6), kind
        torch.testing.assert_close(res[kind]["img_grad"], img.grad, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(res[kind]["txt_grad"], txt.grad, atol=1e-6, rtol=1e-5)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t = build_trainer("beit3-tiny-test", "mwa", method_options={"dropout": 0.0}, device="cpu", precision="fp32",
                          drop_path=0.0, seed=0, total_steps=10)
        b = t.random_batch(BATCH, seed=1)
        loss = t._forward_backward(t.pixels(b), b["input_ids"], b["padding_mask"], GROUPS)
        assert abs(float(loss) - res["trainer"]["loss"]) < 1e-5
        for n, p in t.model.named_parameters():
            if p.requires_grad and p.grad is not None:
                torch.testing.assert_close(res["trainer"]["grads"][n], p.grad, atol=2e-5, rtol=1e-4, msg=n)
    finally:
        torch.set_num_threads(before)
