"""`mwa train` end to end on the tiny backbone: methods, overfitting, budget, signals, resume exactness,
atomic checkpoints under SIGKILL, non-finite loss, run-directory files.

The three fault runs (SIGINT, SIGTERM, SIGKILL) are real `python -m mwa_cli train` subprocesses started together
by one module fixture (a watcher thread sends the signals), so they overlap with the in-process tests.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mwa_cli.errors import EXIT_NONFINITE
from mwa_cli.train.checkpoint import find_checkpoint, load_checkpoint
from mwa_cli.train.config import TrainConfig
from mwa_cli.train.loop import train
from mwa_cli.train.trainer import build_trainer
from tests.helpers.paths import HELPERS, REPO

EXACT = dict(method="mwa", steps=16, batch_size=8, lr=1e-3, seed=0, checkpoint_every=5, log_every=1, val_evals=1,
             workers=0)


pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


def _cfg(data_dir, tok, out, name, **kw) -> TrainConfig:
    base = dict(data_dir=str(data_dir), backbone="beit3-tiny-test", tokenizer=str(tok), out=str(out), name=name)
    base.update(EXACT)
    base.update(kw)
    return TrainConfig(**base)


def _cli_args(data_dir, tok, out, name, **kw) -> list[str]:
    """The real command line through tests/helpers/fault_mwa.py (faults from FAULT_SPEC, see `_fault_env`), with 2
    DataLoader workers (the GPU default): its resumed runs must still equal the in-process reference (0 workers)
    bit for bit."""
    opts = {**EXACT, "workers": 2, **kw}
    args = [sys.executable, "-m", "fault_mwa", "train", str(data_dir), "--backbone", "beit3-tiny-test",
            "--tokenizer", str(tok), "--out", str(out), "--name", name, "--quiet"]
    flags = {"method": "--method", "steps": "--steps", "batch_size": "--batch-size", "lr": "--lr", "seed": "--seed",
             "checkpoint_every": "--checkpoint-every", "log_every": "--log-every", "val_evals": "--val-evals",
             "workers": "--workers"}
    for key, flag in flags.items():
        args += [flag, str(opts[key])]
    return args


def _train_steps(run: Path) -> list[int]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            pass
    return [r["step"] for r in rows if r.get("kind") == "train"]


def _fault_env(**spec) -> dict:
    """Environment of a `python -m fault_mwa` subprocess with these injected faults (tests/helpers/fault_mwa.py)."""
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{REPO}{os.pathsep}{HELPERS}",
                FAULT_SPEC=json.dumps(spec))


class _Fault:
    def __init__(self, name: str, proc: subprocess.Popen, run: Path):
        self.name, self.proc, self.run = name, proc, run
        self.rc: int | None = None
        self.out = self.err = ""
        self.note = ""


@pytest.fixture(scope="module")
def train_fault_runs(train_data_dir, train_tokenizer, tmp_path_factory):
    """Start SIGINT / SIGTERM / SIGKILL runs as real subprocesses; a watcher thread signals them."""
    out = tmp_path_factory.mktemp("fault_runs")
    env = _fault_env(step_delay=0.15)
    kill_env = _fault_env(ckpt_pause=3, step_delay=0.02)
    faults = {}
    for name, e in (("sigint", env), ("sigterm", env), ("sigkill", kill_env)):
        proc = subprocess.Popen(_cli_args(train_data_dir, train_tokenizer, out, name), env=e, cwd=str(REPO),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        faults[name] = _Fault(name, proc, out / name)

    def watch(f: _Fault, sig: int) -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and f.proc.poll() is None:
            if sig == signal.SIGKILL:
                last = f.run / "checkpoint" / "last" / "meta.json"
                writing = list((f.run / "checkpoint").glob(".tmp-*")) if (f.run / "checkpoint").is_dir() else []
                if last.is_file() and writing:  # step 5 published, step 10 being written (paused)
                    f.note = json.loads(last.read_text())["step"]
                    f.proc.send_signal(sig)
                    break
            elif any(s >= 3 for s in _train_steps(f.run)):
                f.proc.send_signal(sig)
                break
            time.sleep(0.05)
        try:
            f.out, f.err = f.proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            f.proc.kill()
            f.out, f.err = f.proc.communicate()
        f.rc = f.proc.returncode

    threads = {n: threading.Thread(target=watch, args=(f, s), daemon=True)
               for (n, f), s in zip(faults.items(), (signal.SIGINT, signal.SIGTERM, signal.SIGKILL))}
    for t in threads.values():
        t.start()

    class Handle:
        def get(self, name: str) -> _Fault:
            threads[name].join(timeout=120)
            return faults[name]

    yield Handle()
    for f in faults.values():
        if f.proc.poll() is None:
            f.proc.kill()


@pytest.fixture(scope="module")
def train_reference_run(train_data_dir, train_tokenizer, tmp_path_factory, train_fault_runs):
    """The uninterrupted run every resumed run must match bit for bit (in-process)."""
    out = tmp_path_factory.mktemp("ref_run")
    result = train(_cfg(train_data_dir, train_tokenizer, out, "ref"))
    assert result.status == "completed", result.message
    return result


# ------------------------------------------------------------------------------------------------ methods
@pytest.mark.parametrize("method", ["mwa", "nke", "lora", "full-ft", "frozen"])
def test_every_method_changes_only_its_trainables(method):
    tr = build_trainer("beit3-tiny-test", method, device="cpu", lr=1e-3, total_steps=10)
    before = {n: p.detach().clone() for n, p in tr.model.named_parameters()}
    trainable = {n for n, p in tr.model.named_parameters() if p.requires_grad}
    if method == "frozen":
        assert not tr.trains and not trainable
        return
    assert trainable
    batch = tr.random_batch(4)
    for _ in range(3):
        loss = tr.step(batch)
    assert math.isfinite(float(loss))
    changed = {n for n, p in tr.model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed, "no parameter moved"
    assert changed <= trainable, f"frozen parameters changed: {sorted(changed - trainable)[:5]}"
    if method == "full-ft":
        assert len(changed) > 0.5 * len(trainable)


@pytest.mark.parametrize("method", ["mwa", "lora", "full-ft"])
def test_loss_falls_on_tiny_overfit_set(method):
    tr = build_trainer("beit3-tiny-test", method, device="cpu", lr=5e-3, drop_path=0.0)
    tr.schedule.fit(30, warmup_steps=0)
    batch = tr.random_batch(8, augment=False)
    losses = [float(tr.step(batch)) for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0], losses


def test_micro_batch_accumulation_keeps_effective_batch():
    tr = build_trainer("beit3-tiny-test", "nke", device="cpu", micro_batch=2, drop_path=0.0)
    loss = tr.step(tr.random_batch(8))
    assert math.isfinite(float(loss)) and tr.micro_batch == 2 and tr.step_count == 1


# ------------------------------------------------------------------------------------------------ full runs
def test_reference_run_writes_the_run_directory(train_reference_run, train_data_dir):
    run = train_reference_run.run_dir
    for f in ("config.json", "metrics.jsonl", "timing.json", "eval.json", "eval_topk.json",
              "adapter_model.safetensors", "adapter_config.json"):
        assert (run / f).is_file(), f
    cfg = json.loads((run / "config.json").read_text())
    for key in ("command", "data_dir", "dataset_hash", "mwa_version", "method", "lr", "batch_size", "seed"):
        assert key in cfg
    assert cfg["data_dir"] == str(Path(train_data_dir).resolve())
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["kind"] == "train"]
    assert [r["step"] for r in train_rows] == list(range(1, 17))
    assert set(train_rows[0]) >= {"kind", "step", "epoch", "loss", "lr", "samples_per_s", "mem_gib", "time_s"}
    evals = [r for r in rows if r["kind"] == "eval"]
    assert evals and all(r["split"] == "val" for r in evals)  # model selection / curves use val only
    assert {"rsum", "i2t_r1", "t2i_r1"} <= set(evals[0])
    timing = json.loads((run / "timing.json").read_text())
    for key in ("wall_s", "train_s", "eval_s", "checkpoint_s", "steps", "samples", "samples_per_s", "device_hours",
                "device_type", "device_name", "n_devices", "peak_mem_gib", "data_wait_fraction", "budget_s",
                "torch", "mwa", "trainable_params", "total_params", "estimated"):
        assert key in timing, key
    assert timing["steps"] == 16 and timing["samples"] == 128 and timing["device_type"] == "cpu"
    assert timing["estimated"] is False and 0 < timing["trainable_params"] < timing["total_params"]
    assert "end" not in timing  # no budget: nothing was reserved for the end
    ev = json.loads((run / "eval.json").read_text())
    assert ev["split"] == "test" and ev["n_images"] == 4 and ev["n_captions"] == 8
    assert ev["method"] == "mwa" and ev["backbone"] == "beit3-tiny-test" and ev["dataset_hash"]
    assert 0 <= ev["rsum"] <= 600 and "per_label" in ev and "protocol" in ev
    top = json.loads((run / "eval_topk.json").read_text())
    assert top["split"] == "test" and len(top["i2t"]) == 4 and len(top["t2i"]) == 8


def test_resuming_a_finished_run_is_refused(train_reference_run):
    from mwa_cli.errors import ConfigError

    with pytest.raises(ConfigError, match="already finished"):
        train(TrainConfig(resume=str(train_reference_run.run_dir)))


def test_frozen_method_evaluates_without_training(train_data_dir, train_tokenizer, tmp_path):
    res = train(_cfg(train_data_dir, train_tokenizer, tmp_path, "frozen", method="frozen"))
    assert res.status == "completed" and res.steps == 0
    assert json.loads((res.run_dir / "eval.json").read_text())["method"] == "frozen"


def test_budget_is_honoured(train_data_dir, train_tokenizer, tmp_path, train_fault_runs):
    for name in ("sigint", "sigterm", "sigkill"):  # a clock test: not beside three other trainings on 2 cores
        train_fault_runs.get(name)
    budget = 20.0
    # patience 0: this checks the budget plan; early stopping (which may end a run long before its budget, as it
    # should when the tiny model stops improving) is tested in test_stop_when_done.py
    cfg = _cfg(train_data_dir, train_tokenizer, tmp_path, "budget", steps=None, budget="20s", checkpoint_every=0,
               log_every=10, val_evals=2, patience=0)
    res = train(cfg)
    assert res.status == "completed", res.message
    timing = json.loads((res.run_dir / "timing.json").read_text())
    assert timing["budget_s"] == budget
    assert timing["wall_s"] <= budget + max(0.02 * budget, 30.0)  # the documented tolerance
    assert timing["wall_s"] >= 0.5 * budget, f"the run should use its budget, not stop at once: {res.message}"
    plan = json.loads((res.run_dir / "config.json").read_text())["plan"]
    assert plan["total_steps"] >= timing["steps"] > 5
    assert (res.run_dir / "eval.json").is_file()
    end = timing["end"]  # what the reserve held when training stopped, against what the end took
    assert set(end["reserved"]) == {"val_s", "final_eval_s", "end_s", "margin_s"} and end["reserved_s"] > 0
    assert {"publish_s", "final_eval_s"} <= set(end["taken"]) and 0 < end["taken_s"] < timing["wall_s"]


# ------------------------------------------------------------------------------------------------ faults
def _trainables(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "adapter_model.safetensors"))


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _trainables(a), _trainables(b)
    assert wa.keys() == wb.keys()
    diff = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not diff, f"weights differ after resume: {diff[:5]}"


def test_sigint_saves_checkpoint_and_resume_is_bit_exact(train_fault_runs, train_reference_run, tmp_path):
    f = train_fault_runs.get("sigint")
    assert f.rc == 130, (f.rc, f.err[-2000:])
    assert "mwa train --resume" in f.err
    ck = find_checkpoint(f.run)
    assert ck is not None
    step = load_checkpoint(ck)["trainer"]["step"]
    assert 3 <= step < 16
    assert not (f.run / "adapter_model.safetensors").exists()
    res = train(TrainConfig(resume=str(f.run)))
    assert res.status == "completed" and res.steps == 16, res.message
    _assert_same_weights(res.run_dir, train_reference_run.run_dir)
    steps = _train_steps(f.run)
    assert steps == list(range(1, 17))  # no duplicated rows after the resume


def test_sigterm_exits_143_with_resumable_checkpoint(train_fault_runs):
    f = train_fault_runs.get("sigterm")
    assert f.rc == 143, (f.rc, f.err[-2000:])
    assert "mwa train --resume" in f.err
    state = load_checkpoint(find_checkpoint(f.run))
    assert state["trainer"]["step"] == max(_train_steps(f.run))
    assert json.loads((f.run / "timing.json").read_text())["status"] == "interrupted"


def test_sigkill_during_checkpoint_keeps_previous_one(train_fault_runs, train_reference_run):
    f = train_fault_runs.get("sigkill")
    assert f.rc == -signal.SIGKILL, (f.rc, f.err[-2000:])
    assert f.note == 5
    ck = find_checkpoint(f.run)
    assert ck is not None and ck.name == "last"
    assert json.loads((ck / "meta.json").read_text())["step"] == 5
    assert load_checkpoint(ck)["trainer"]["step"] == 5
    res = train(TrainConfig(resume=str(f.run)))  # the next save also clears the half-written temp folder
    assert res.status == "completed", res.message
    assert not list((f.run / "checkpoint").glob(".tmp-*"))
    _assert_same_weights(res.run_dir, train_reference_run.run_dir)


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(train_data_dir, train_tokenizer, tmp_path,
                                                             monkeypatch):
    from typer.testing import CliRunner

    from mwa_cli.cli import app
    from mwa_cli.train.trainer import Trainer

    pair_loss = Trainer._pair_loss

    def poisoned(self, img, txt, *groups):  # the 7th step's loss becomes NaN
        loss = pair_loss(self, img, txt, *groups)
        return loss * float("nan") if self.step_count == 6 else loss

    monkeypatch.setattr(Trainer, "_pair_loss", poisoned)
    args = [str(train_data_dir), "--backbone", "beit3-tiny-test", "--tokenizer", str(train_tokenizer),
            "--out", str(tmp_path), "--name", "nan", "--steps", "20", "--batch-size", "8",
            "--checkpoint-every", "5", "--log-every", "4", "--val-evals", "0", "--quiet"]
    result = CliRunner().invoke(app, ["train", *args])
    assert result.exit_code == EXIT_NONFINITE == 7, result.output
    text = " ".join(result.output.split())
    assert "nan" in text and "last good checkpoint (step 5)" in text
    state = load_checkpoint(find_checkpoint(tmp_path / "nan"))
    assert state["trainer"]["step"] == 5
    assert all(torch.isfinite(t).all() for t in state["trainer"]["trainables"].values())
    assert not (tmp_path / "nan" / "adapter_model.safetensors").exists()


def test_out_of_memory_halves_micro_batch_and_keeps_effective_batch():
    """The CUDA back-off logic, driven on CPU by a forward that runs out of memory above 2 samples."""
    from mwa_cli.train.trainer import OOM_ERRORS

    tr = build_trainer("beit3-tiny-test", "nke", device="cpu", drop_path=0.0)
    said = []
    tr.on_message = said.append
    tr.oom_back_off = True
    real = tr._encode_image
    seen = []

    def encode_image(px):
        seen.append(px.shape[0])
        if px.shape[0] > 2:
            raise OOM_ERRORS[0]("CUDA out of memory (simulated)")
        return real(px)

    tr._encode_image = encode_image
    loss = tr.step(tr.random_batch(8))
    assert math.isfinite(float(loss)) and tr.micro_batch == 2 and tr.step_count == 1
    # 8 and 4 fail, then 4 micro-batches of 2, each run twice (embeddings, then gradients: tests/unit/train/
    # test_grad_cache.py) = the same effective batch 8
    assert seen == [8, 4] + [2] * 8
    assert len(said) == 2 and "effective batch stays 8" in said[-1] and "4 gradient-accumulation" in said[-1]


def test_data_order_and_flip_guard(train_data_dir):
    import numpy as np

    from mwa_cli.train.data import PairTable, TrainBatches

    n = 32
    ids = torch.zeros(n, 8, dtype=torch.long)

    def table(flip_ok):
        return PairTable(image_rows=np.arange(n) % 16, input_ids=ids, padding_mask=ids, flip_ok=flip_ok)

    never = TrainBatches(table(np.zeros(n, dtype=bool)), train_data_dir, 32, 24, 8, seed=0)
    always = TrainBatches(table(np.ones(n, dtype=bool)), train_data_dir, 32, 24, 8, seed=0)
    assert not any(never[s]["flip"].any() for s in range(8))  # a left/right caption is never flipped
    assert any(always[s]["flip"].any() for s in range(8))
    a, b = always[5], TrainBatches(table(np.ones(n, dtype=bool)), train_data_dir, 32, 24, 8, seed=0)[5]
    assert all(torch.equal(a[k], b[k]) for k in ("images", "boxes", "flip", "index"))  # step 5 is step 5
    epoch0 = torch.cat([always[s]["index"] for s in range(4)])
    assert sorted(epoch0.tolist()) == list(range(32))  # an epoch visits every pair once


def test_cpu_batch_size_auto_says_what_it_picks(train_data_dir, train_tokenizer, tmp_path):
    said = []
    res = train(_cfg(train_data_dir, train_tokenizer, tmp_path, "auto", steps=2, batch_size="auto", val_evals=0),
                progress=lambda ev, d: said.append(d.get("text", "")) if ev == "message" else None)
    assert res.status == "completed"
    assert any("on the CPU it uses 32" in m for m in said)
    cfg = json.loads((res.run_dir / "config.json").read_text())
    assert cfg["batch_size"] == 32 and cfg["auto_resolved"] == ["batch_size"]


def test_sigterm_to_the_process_group_with_loader_workers_still_checkpoints(train_data_dir, train_tokenizer,
                                                                             tmp_path):
    """torchrun (and systemd) signal the whole process group: the DataLoader workers must ignore SIGTERM and
    leave the stop to the trainer, which checkpoints and exits 143."""
    env = _fault_env(step_delay=0.15)
    args = _cli_args(train_data_dir, train_tokenizer, tmp_path, "workers", workers=1, checkpoint_every=100)
    proc = subprocess.Popen(args, env=env, cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    run = tmp_path / "workers"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not any(s >= 3 for s in _train_steps(run)):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert "DataLoader worker" not in err
    state = load_checkpoint(find_checkpoint(run))
    assert state["trainer"]["step"] == max(_train_steps(run))
