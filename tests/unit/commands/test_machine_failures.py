"""A full disk, a read-only folder and an exhausted memory are the machine's doing, not a bug: each has its own
message and exit code (10, 11, 12), never "internal error … please report this", and what a failed or killed
command leaves never blocks the next one. Real filesystems where this machine allows them (a 30 MB tmpfs, a
read-only tmpfs; skipped, saying why, where mounting is refused), real subprocesses and signals, and the
allocation failures PyTorch and numpy really raise."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mwa_cli.cli import app
from mwa_cli.data import cache as cache_mod
from mwa_cli.env_errors import explain
from mwa_cli.errors import EXIT_NO_MEMORY, EXIT_NO_SPACE, EXIT_NOT_WRITABLE
from mwa_cli.resources import SAMPLE_DATA, package_path
from tests.helpers.paths import REPO
from tests.helpers.photos import make_photos
from tests.helpers.special_files import mounted_tmpfs

runner = CliRunner()
SAMPLE = package_path(SAMPLE_DATA)  # 440 photos: a 224 px cache is 66 MB, a 32 px one 1.4 MB
ENV = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")


def mwa(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mwa_cli", *map(str, args)], env=ENV, capture_output=True,
                          text=True, timeout=timeout, cwd=str(REPO))


def assert_clear(proc_or_res, code: int, *words: str) -> None:
    out = " ".join((getattr(proc_or_res, "stderr", "") + getattr(proc_or_res, "stdout", "") if
                    hasattr(proc_or_res, "returncode") else proc_or_res.output).split())
    got = proc_or_res.returncode if hasattr(proc_or_res, "returncode") else proc_or_res.exit_code
    assert got == code, out[-3000:]
    assert "internal error" not in out and "Traceback" not in out, out[-3000:]
    for w in words:
        assert w in out, out[-3000:]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".staging_*")) + sorted(p.name for p in folder.rglob(".caching_*"))


# ----------------------------------------------------------------------------- full disks
@pytest.mark.slow
@pytest.mark.parametrize("workers", ["0", "1"])  # a pool of decoders, and decoding in the command's own process
def test_prepare_onto_a_full_disk_then_again(workers, tmp_path):
    with mounted_tmpfs(tmp_path / "small", 30) as small:
        out = small / "d"
        done = mwa("prepare", SAMPLE, "--out", out, "--image-size", "224", "--workers", workers)
        assert_clear(done, EXIT_NO_SPACE, "no space left on the disk")
        assert leftovers(out) == []
        done = mwa("prepare", SAMPLE, "--out", out, "--image-size", "32")  # the same folder, a size that fits
        assert_clear(done, 0)
        assert (out / "dataset.json").is_file()


@pytest.mark.slow
def test_a_killed_prepare_leaves_nothing_that_blocks_the_next_one(tmp_path):
    with mounted_tmpfs(tmp_path / "small", 30) as small:
        out = small / "d"
        args = [sys.executable, "-m", "mwa_cli", "prepare", str(SAMPLE), "--out", str(out), "--image-size", "96",
                "--workers", "1"]
        proc = subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=str(REPO))
        deadline = time.monotonic() + 120
        while not leftovers(out) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # mid-decode: its 12 MB staging file stays behind
        proc.wait()
        assert leftovers(out), "the kill came too late to leave a staging file"
        done = mwa("prepare", SAMPLE, "--out", out, "--image-size", "96")  # 12 + 12 + 12 MB would not fit
        assert_clear(done, 0)
        assert leftovers(out) == []


def test_a_leftover_that_fills_the_disk_is_removed_before_the_marker_is_written(tmp_path):
    with mounted_tmpfs(tmp_path / "small", 4) as small:
        photos = make_photos(tmp_path / "photos", n=4)
        out = small / "d"
        assert_clear(runner.invoke(app, ["prepare", str(photos), "--out", str(out), "--image-size", "32"]), 0)
        left = out / "cache" / ".staging_32_deadbeef.u8"  # what a prepare killed mid-decode leaves
        with open(left, "wb", buffering=0) as fh, pytest.raises(OSError) as full:
            while True:
                fh.write(b"\0" * 65536)  # until the disk is full
        assert full.value.errno == errno.ENOSPC and shutil.disk_usage(small).free < 65536
        res = runner.invoke(app, ["prepare", str(photos), "--out", str(out), "--image-size", "32"])
        assert_clear(res, 0)
        assert not left.exists()


@pytest.mark.slow
def test_index_onto_a_full_disk(tmp_path):
    from tests.unit.search.test_index import _make_run

    run = _make_run(tmp_path / "run")
    with mounted_tmpfs(tmp_path / "small", 1) as small:
        done = mwa("index", SAMPLE, "--adapter", run, "--out", small / "idx", "--device", "cpu")
        assert_clear(done, EXIT_NO_SPACE, "no space left on the disk")
        assert not (small / "idx").exists() or leftovers(small / "idx") == []


def test_a_full_disk_where_mounting_is_refused(tmp_path, monkeypatch):
    """The same path on machines without mount: ENOSPC injected at the reservation of the staging file."""
    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_mod.os, "posix_fallocate", full)
    photos = make_photos(tmp_path / "photos", n=4)
    res = runner.invoke(app, ["prepare", str(photos), "--out", str(tmp_path / "d"), "--image-size", "32"])
    assert_clear(res, EXIT_NO_SPACE, "no space left on the disk")
    assert leftovers(tmp_path / "d") == []


def _die(signum: int) -> None:
    import faulthandler

    faulthandler.disable()  # pytest's handler would print this worker's stack on SIGBUS
    os.kill(os.getpid(), signum)


@pytest.mark.parametrize("signum,code,words", [(signal.SIGBUS, EXIT_NO_SPACE, "SIGBUS"),
                                               (signal.SIGKILL, EXIT_NO_MEMORY, "out-of-memory killer")])
def test_a_worker_killed_by_a_signal_is_reported_as_its_cause(signum, code, words):
    """Real worker processes of the decoding pool die of the signal; the broken pool says what killed them."""
    with pytest.raises(Exception) as caught:
        list(cache_mod.pool_map(_die, [signum] * 4, workers=2, chunksize=1))
    assert type(caught.value).__name__ == "BrokenProcessPool"
    err = explain(caught.value)
    assert err is not None and err.exit_code == code and words in err.message


# ----------------------------------------------------------------------------- read-only folders
@pytest.fixture(scope="module")
def trained(train_data_dir, train_tokenizer, tmp_path_factory) -> Path:
    from mwa_cli.train.config import TrainConfig
    from mwa_cli.train.loop import train

    out = tmp_path_factory.mktemp("ro_runs")
    cfg = TrainConfig(data_dir=str(train_data_dir), backbone="beit3-tiny-test", tokenizer=str(train_tokenizer),
                      out=str(out), name="r", steps=4, batch_size=8, lr=1e-3, seed=0, checkpoint_every=2,
                      val_evals=0, workers=0)
    assert train(cfg).exit_code == 0
    return out / "r"


def test_read_only_folders(trained, train_data_dir, train_tokenizer, tmp_path):
    photos = make_photos(tmp_path / "photos", n=4)
    with mounted_tmpfs(tmp_path / "ro", 4, read_only=True) as ro:
        cases = {
            "prepare": ["prepare", str(photos), "--out", str(ro / "data")],
            "train": ["train", str(train_data_dir), "--backbone", "beit3-tiny-test", "--tokenizer",
                      str(train_tokenizer), "--out", str(ro / "runs"), "--steps", "2", "--batch-size", "8",
                      "--device", "cpu", "--workers", "0", "--quiet"],
            "index": ["index", str(photos), "--adapter", str(trained), "--out", str(ro / "idx"), "--device", "cpu"],
            "report": ["report", str(trained), "--out", str(ro / "report.html")],
            "export": ["export", str(trained), "--out", str(ro / "exp")],
        }
        for name, args in cases.items():
            res = runner.invoke(app, args)
            assert_clear(res, EXIT_NOT_WRITABLE, "read-only")
            assert not any(ro.iterdir()), name


def test_eval_and_resume_of_a_run_on_a_read_only_disk(trained, tmp_path):
    with mounted_tmpfs(tmp_path / "m", 16) as m:
        run = m / "r"
        shutil.copytree(trained, run, ignore=shutil.ignore_patterns(".lock"))
        (run / "eval.json").unlink()  # as interrupted: resumable
        (run / "adapter_model.safetensors").unlink()
        subprocess.run(["mount", "-o", "remount,ro", str(m)], check=True)
        res = runner.invoke(app, ["train", "--resume", str(run), "--quiet"])
        assert_clear(res, EXIT_NOT_WRITABLE, "read-only")
    with mounted_tmpfs(tmp_path / "m2", 16) as m2:
        run = m2 / "r"
        shutil.copytree(trained, run, ignore=shutil.ignore_patterns(".lock"))
        subprocess.run(["mount", "-o", "remount,ro", str(m2)], check=True)
        res = runner.invoke(app, ["eval", str(run)])
        assert_clear(res, EXIT_NOT_WRITABLE, "read-only")


# ----------------------------------------------------------------------------- memory
@pytest.mark.parametrize("allocate", [
    lambda: __import__("torch").empty(2**50, dtype=__import__("torch").uint8),  # RuntimeError DefaultCPUAllocator
    lambda: __import__("numpy").empty(2**50, dtype="uint8"),  # numpy's MemoryError
])
def test_out_of_memory_is_said_as_such(allocate, trained, monkeypatch):
    """A real failed allocation (a petabyte) where `mwa eval` embeds its images."""
    import mwa_cli.eval.evaluate as evaluate

    monkeypatch.setattr(evaluate, "embed_images", lambda *a, **k: allocate())
    res = runner.invoke(app, ["eval", str(trained), "--device", "cpu"])
    assert_clear(res, EXIT_NO_MEMORY, "out of memory (RAM)", "--batch-size")
    json.loads((trained / "eval.json").read_text())  # the run's own eval.json is untouched
