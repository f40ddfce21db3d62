"""A run folder is mwa's own, stays inside --out, is written by one process at a time, and an interruption during
the final evaluation leaves a run that resumes straight into it. Real subprocesses where signals are involved.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from mwa_cli.errors import ConfigError
from mwa_cli.train.config import TrainConfig, resolve_config
from mwa_cli.train.run_dir import RunDir
from tests.helpers.paths import HELPERS, REPO


@pytest.mark.parametrize("name", ["../escaped", "a/b", "/abs/path", "..", ".", " x", "a\\b"])
def test_a_name_cannot_leave_out(name, tmp_path):
    with pytest.raises(ConfigError, match="is not a folder name"):
        TrainConfig(data_dir="d", name=name).validate()
    cfg_file = tmp_path / "c.json"
    cfg_file.write_text(json.dumps({"name": name}))
    with pytest.raises(ConfigError, match="is not a folder name"):
        resolve_config({"data_dir": "d"}, cfg_file)
    with pytest.raises(ConfigError, match="is not a folder name"):
        RunDir.create(tmp_path, name)
    assert not (tmp_path.parent / "escaped").exists()


@pytest.mark.parametrize("bad", ["nan", "inf", "-1", "0"])
def test_learning_rate_must_be_a_positive_number(bad):
    with pytest.raises(ConfigError, match=r"--lr must be a number in \(0, 10\]"):
        TrainConfig(data_dir="d", lr=float(bad)).validate()


def test_a_foreign_folder_is_never_replaced(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    for f in ("config.json", "eval.json", "timing.json", "notes.txt"):
        (victim / f).write_text(f"user's {f}")
    with pytest.raises(ConfigError, match="not an mwa run folder"):
        RunDir.create(tmp_path, "victim")
    assert sorted(p.name for p in victim.iterdir()) == ["config.json", "eval.json", "notes.txt", "timing.json"]
    assert all((victim / f).read_text() == f"user's {f}" for f in ("config.json", "eval.json", "timing.json"))


@pytest.mark.parametrize("lock_text", ["", "mwa process 4242"])
def test_a_start_killed_before_its_marker_is_reused(tmp_path, lock_text):
    # a kill between taking the lock and writing the marker leaves only the lock file (empty if the kill came
    # between its truncation and the pid)
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / ".lock").write_text(lock_text)
    run = RunDir.create(tmp_path, "r")
    assert (run.path / ".mwa-run").is_file()
    run.unlock()


def test_a_start_killed_while_writing_its_marker_is_reused(tmp_path):
    # the marker is written to a temporary file first: a kill there leaves the lock and that file
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / ".lock").write_text("mwa process 4242")
    (tmp_path / "r" / ".mwa-run.k2x8q1.tmp").write_text('{"kind": "r')
    run = RunDir.create(tmp_path, "r")
    assert sorted(p.name for p in run.path.iterdir()) == [".lock", ".mwa-run"]
    run.unlock()


@pytest.mark.parametrize("name, text", [
    ("notes.tmp", "the user's"),  # named like a temporary file, but not mwa's marker's
    (".lock", "held by the user's backup tool"),  # named like mwa's lock, but not written by mwa
])
def test_a_user_file_named_like_one_of_mwa_s_is_not_taken_for_mwa_s(tmp_path, name, text):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / name).write_text(text)
    with pytest.raises(ConfigError, match="not an mwa run folder"):
        RunDir.create(tmp_path, "r")
    assert [p.name for p in (tmp_path / "r").iterdir()] == [name]
    assert (tmp_path / "r" / name).read_text() == text


def test_an_aborted_start_of_mwa_is_reused_and_marked(tmp_path):
    run = RunDir.create(tmp_path, "r")
    run.write_config({"mwa_version": "x"})
    run.unlock()
    again = RunDir.create(tmp_path, "r")  # stopped before its first checkpoint: started again
    assert (again.path / ".mwa-run").is_file() and not (again.path / "config.json").exists()
    again.unlock()


def test_one_writer_per_run_folder(tmp_path):
    first = RunDir.create(tmp_path, "r")
    other = RunDir(first.path)
    with pytest.raises(ConfigError, match=f"is being written by mwa process {os.getpid()}"):
        other.lock()
    first.unlock()
    other.lock()
    other.unlock()


def _fault_env(**spec) -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{REPO}{os.pathsep}{HELPERS}",
                FAULT_SPEC=json.dumps(spec))


def _args(data, tok, out, name, steps) -> list[str]:
    return ["train", str(data), "--backbone", "beit3-tiny-test", "--tokenizer", str(tok), "--out", str(out),
            "--name", name, "--steps", str(steps), "--batch-size", "8", "--seed", "0", "--val-evals", "0",
            "--checkpoint-every", "100", "--device", "cpu", "--quiet"]


@pytest.mark.slow
def test_a_second_train_on_the_same_run_is_refused(tmp_path, train_data_dir, train_tokenizer):
    out = tmp_path / "runs"
    first = subprocess.Popen([sys.executable, "-m", "fault_mwa", *_args(train_data_dir, train_tokenizer, out, "r",
                                                                        400)],
                             env=_fault_env(step_delay=0.3), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, cwd=str(REPO))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out / "r" / "metrics.jsonl").is_file():
        time.sleep(0.1)
    second = subprocess.run([sys.executable, "-m", "mwa_cli", *_args(train_data_dir, train_tokenizer, out, "r", 4)],
                            env=_fault_env(), capture_output=True, text=True, timeout=120, cwd=str(REPO))
    assert first.poll() is None, "the first run must still be writing while the second one starts"
    assert second.returncode == 2, second.stderr
    assert "is being written by mwa process" in second.stderr and "Traceback" not in second.stderr
    first.send_signal(signal.SIGINT)  # ends the first run with its checkpoint
    _, err = first.communicate(timeout=120)
    assert first.returncode == 130, err[-2000:]
    rows = [json.loads(x) for x in (out / "r" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if r["kind"] == "train"]
    assert steps == sorted(set(steps))  # one writer: no interleaved rows
    assert json.loads((out / "r" / "config.json").read_text())["steps"] == 400  # the first run's settings


@pytest.mark.slow
def test_ctrl_c_during_the_final_evaluation_resumes_into_it(tmp_path, train_data_dir, train_tokenizer):
    out = tmp_path / "runs"
    stamp = tmp_path / "stamp"
    # Ctrl-C as a terminal delivers it: with SIGINT at its default disposition. A test run started in the
    # background (`pytest &`) ignores SIGINT, children inherit that, and mwa rightly keeps it ignored once its own
    # handler is taken down for the finalisation.
    proc = subprocess.Popen([sys.executable, "-m", "fault_mwa", *_args(train_data_dir, train_tokenizer, out, "f", 6)],
                            env=_fault_env(final_eval_delay=30, stamp=str(stamp)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=str(REPO),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not stamp.is_file() and proc.poll() is None:
        time.sleep(0.1)
    stamped = stamp.is_file()
    proc.send_signal(signal.SIGINT)
    out_text, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (f"stamp written: {stamped}; this process's SIGINT handler: "
                                    f"{signal.getsignal(signal.SIGINT)}\n{out_text[-1000:]}\n{err[-2000:]}")
    assert not (out / "f" / "eval.json").exists()
    res = subprocess.run([sys.executable, "-m", "mwa_cli", "train", "--resume", str(out / "f"), "--quiet"],
                         env=_fault_env(), capture_output=True, text=True, timeout=180, cwd=str(REPO))
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads((out / "f" / "eval.json").read_text())["split"] == "test"
    steps = [json.loads(x)["step"] for x in (out / "f" / "metrics.jsonl").read_text().splitlines()
             if json.loads(x)["kind"] == "train"]
    assert steps[-1] == 6


def test_the_lock_removes_half_written_checkpoints(tmp_path):
    run = RunDir.create(tmp_path, "r")
    stale = run.checkpoint_root / ".tmp-123-456"
    stale.mkdir(parents=True)
    (stale / "state.pt").write_bytes(b"x" * 1000)
    run.unlock()
    again = RunDir(run.path)
    again.lock()
    assert not stale.exists()
    again.unlock()


def test_a_full_disk_is_a_message_not_an_internal_error(capsys):
    import errno

    import typer

    from mwa_cli.commands.common import guarded
    from mwa_cli.errors import EXIT_NO_SPACE

    @guarded
    def writes():
        raise OSError(errno.ENOSPC, "No space left on device", "runs/r/adapter_model.safetensors")

    with pytest.raises(typer.Exit) as exc:
        writes()
    assert exc.value.exit_code == EXIT_NO_SPACE
    err = capsys.readouterr().err
    assert "no space left on the disk" in err and "internal error" not in err and "--resume" in err


def test_launcher_variables_change_nothing_outside_the_launcher(tmp_path, monkeypatch):
    from mwa_cli.train.dist.env import ENV_COMMAND, ENV_RESULT, user_command
    from mwa_cli.train.dist.handoff import write_result

    target = tmp_path / "victim.txt"
    target.write_text("keep me")
    monkeypatch.setenv(ENV_RESULT, str(target))
    monkeypatch.setenv(ENV_COMMAND, "rm -rf ~/important")
    write_result({"exit_code": 0})
    assert target.read_text() == "keep me"
    assert user_command() is None
