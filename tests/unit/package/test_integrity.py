"""Every file mwa publishes has its sha256 recorded beside it and checked on load (mwa_cli/integrity.py): damaged
adapter weights, checkpoint state, index embeddings and a hand-edited manifest are refused with a message naming
the file (exit 6) instead of silently changing results; side files written before hashes were recorded still
load. Real files: a real `mwa prepare`, a tiny training run, a real index."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mwa_cli import integrity
from mwa_cli.cli import app
from mwa_cli.data.cache import ImageCache, ensure_cache
from mwa_cli.data.manifest import load_manifest
from mwa_cli.data.prepare import prepare_dataset
from mwa_cli.errors import EXIT_CORRUPT, IntegrityError
from mwa_cli.fileio import sha256_file
from mwa_cli.integrity import HashingWriter, sha256_of
from mwa_cli.search.build import build_index
from mwa_cli.search.store import SearchIndex
from mwa_cli.train.config import TrainConfig
from mwa_cli.train.loop import train
from tests.helpers.paths import REPO
from tests.helpers.photos import make_photos

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def flip_bytes(path: Path, n: int = 30, *, start: int | None = None) -> None:
    """Invert `n` bytes spread over the file's second half (tensor data, past any header)."""
    data = bytearray(path.read_bytes())
    lo = start if start is not None else len(data) // 2
    for i in np.linspace(lo, len(data) - 1, n).astype(int):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def safetensors_data_start(path: Path) -> int:
    return 8 + int.from_bytes(path.read_bytes()[:8], "little")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("integrity")
    photos = make_photos(root / "photos")
    prepare_dataset(photos, root / "data", image_size=32, split="0.6,0.2,0.2", progress=False, workers=1)
    return root / "data"


@pytest.fixture(scope="module")
def finished_run(prepared, train_tokenizer, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("integrity_runs")
    cfg = TrainConfig(data_dir=str(prepared), backbone="beit3-tiny-test", tokenizer=str(train_tokenizer),
                      out=str(out), name="r", method="mwa", steps=4, batch_size=4, lr=1e-3, seed=0,
                      checkpoint_every=2, val_evals=0, workers=0)
    assert train(cfg).exit_code == 0
    return out / "r"


def _copy(run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "runs" / run.name
    shutil.copytree(run, dst, ignore=shutil.ignore_patterns(".lock"))
    return dst


def test_hashing_writer_hashes_what_it_writes(tmp_path):
    with open(tmp_path / "f", "wb") as raw:
        w = HashingWriter(raw)
        w.write(b"abc" * 1000)
        w.write(b"def")
    assert w.hexdigest() == sha256_of(tmp_path / "f")


def test_damaged_adapter_weights_fail_mwa_eval_clearly(finished_run, tmp_path):
    run = _copy(finished_run, tmp_path)
    before = (run / "eval.json").read_bytes()
    weights = run / "adapter_model.safetensors"
    flip_bytes(weights, 30, start=safetensors_data_start(weights))
    res = runner.invoke(app, ["eval", str(run), "--device", "cpu"])
    out = " ".join(res.output.split())
    assert res.exit_code == EXIT_CORRUPT, out
    assert "adapter_model.safetensors is damaged" in out and "adapter_config.json records" in out
    assert "internal error" not in out and "Traceback" not in out
    assert (run / "eval.json").read_bytes() == before  # nothing overwritten


def test_an_adapter_written_before_hashes_still_loads(finished_run, tmp_path):
    run = _copy(finished_run, tmp_path)
    cfg = json.loads((run / "adapter_config.json").read_text(encoding="utf-8"))
    assert set(cfg["files"]) == {"adapter_model.safetensors"}
    del cfg["files"]
    (run / "adapter_config.json").write_text(json.dumps(cfg), encoding="utf-8")
    res = runner.invoke(app, ["eval", str(run), "--device", "cpu", "--json"])
    assert res.exit_code == 0, res.output


def test_damaged_checkpoint_names_the_file_and_falls_back_to_a_sound_one(finished_run, tmp_path):
    run = _copy(finished_run, tmp_path)
    (run / "eval.json").unlink()  # stopped before its final evaluation: it resumes into it
    last = run / "checkpoint" / "last"
    sound = tmp_path / "sound"
    shutil.copytree(last, sound)
    flip_bytes(last / "state.pt", 30)
    with pytest.raises(IntegrityError, match=r"checkpoint/last/state.pt is damaged") as err:
        train(TrainConfig(resume=str(run), workers=0))
    assert "learning rate" not in str(err.value) and "--lr" not in str(err.value)
    assert "restore the run folder" in (err.value.hint or "")
    res = runner.invoke(app, ["train", "--resume", str(run), "--quiet"])
    assert res.exit_code == EXIT_CORRUPT and "state.pt is damaged" in " ".join(res.output.split())
    # with the previous checkpoint still there (a kill between the two renames of a save), it is used instead
    shutil.copytree(sound, run / "checkpoint" / "last.old")
    res = runner.invoke(app, ["train", "--resume", str(run), "--quiet"])
    out = " ".join(res.output.split())
    assert res.exit_code == 0, out
    assert "resuming from the previous checkpoint" in out and (run / "eval.json").is_file()
    # the sound checkpoint took the damaged one's place: the folder is laid out as an uninterrupted run's
    assert (last / "state.pt").read_bytes() == (sound / "state.pt").read_bytes()
    assert not (run / "checkpoint" / "last.old").exists()


def test_hand_edited_manifest_is_refused_on_resume(prepared, finished_run, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(prepared, data, ignore=shutil.ignore_patterns(".lock"))
    run = _copy(finished_run, tmp_path)
    cfg = json.loads((run / "config.json").read_text(encoding="utf-8"))
    cfg["data_dir"] = str(data)
    (run / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    (run / "eval.json").unlink()
    text = (data / "manifest.csv").read_text(encoding="utf-8")
    (data / "manifest.csv").write_text(text.replace("a red mark", "a blue mark", 1), encoding="utf-8")
    with pytest.raises(IntegrityError, match="manifest.csv is damaged or was changed") as err:
        load_manifest(data)
    assert "re-run `mwa prepare`" in (err.value.hint or "")
    res = runner.invoke(app, ["train", "--resume", str(run), "--quiet"])
    out = " ".join(res.output.split())
    assert res.exit_code == EXIT_CORRUPT and "manifest.csv" in out and "dataset.json records" in out


def test_damaged_image_cache_is_refused_and_rebuilt_from_the_photos(prepared, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(prepared, data, ignore=shutil.ignore_patterns(".lock"))
    u8 = data / "cache" / "images_32.u8"
    good = u8.read_bytes()
    flip_bytes(u8, 30)
    with pytest.raises(IntegrityError, match="images_32.u8 is damaged"):
        ImageCache(data, 32)
    ensure_cache(data, 32, progress=False, workers=1)  # a cache is rebuilt from the photos, not trusted
    assert u8.read_bytes() == good


def test_damaged_index_embeddings_are_detected(finished_run, prepared, tmp_path):
    photos = Path(json.loads((prepared / "dataset.json").read_text())["source"])
    idx = tmp_path / "idx"
    build_index(photos, finished_run, idx, device="cpu")
    meta = json.loads((idx / "index.json").read_text(encoding="utf-8"))
    assert {"embeddings.safetensors", "manifest.csv", "rejected.csv"} <= set(meta["files"])
    emb = idx / "embeddings.safetensors"
    assert emb.stat().st_mode & 0o777 == 0o666 & ~_umask()  # follows the umask like the other files
    flip_bytes(emb, 30, start=safetensors_data_start(emb))
    with pytest.raises(IntegrityError, match="embeddings.safetensors is damaged"):
        SearchIndex.load(idx)
    res = runner.invoke(app, ["search", "a red mark", "--index", str(idx)])
    out = " ".join(res.output.split())
    assert res.exit_code == EXIT_CORRUPT and "embeddings.safetensors is damaged" in out and "--rebuild" in out
    # a truncated manifest is caught the same way
    build_index(photos, finished_run, idx, device="cpu")  # a re-run rebuilds what is damaged
    SearchIndex.load(idx)
    man = idx / "manifest.csv"
    man.write_bytes(man.read_bytes()[: man.stat().st_size // 2])
    res = runner.invoke(app, ["search", "a red mark", "--index", str(idx)])
    assert res.exit_code == EXIT_CORRUPT and "manifest.csv is damaged" in " ".join(res.output.split())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ------------------------------------------------------------------------------------------------ verified stamps
_COUNT_READS = """
import json, sys
from mwa_cli import integrity
reads = []
real = integrity.sha256_file
integrity.sha256_file = lambda path, *a, **k: (reads.append(str(path)), real(path, *a, **k))[1]
side = json.loads(sys.argv[2])
integrity.verify(sys.argv[1], side, list(side["files"]), side_name="side.json", remedy="rewrite it")
print(json.dumps(reads))
"""


def _verify_in_a_new_process(folder: Path, side: dict) -> list[str]:
    out = subprocess.run([sys.executable, "-c", _COUNT_READS, str(folder), json.dumps(side)], capture_output=True,
                         text=True, env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _aged_file(folder: Path, size: int = 4 << 20) -> tuple[Path, dict]:
    """A file and its side record, older than integrity.RACY_NS (so a check may stamp it)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "big.bin"
    path.write_bytes(np.random.default_rng(0).bytes(size))
    time.sleep(2 * integrity.RACY_NS / 1e9)
    return path, {"files": {path.name: sha256_file(path)}}


def _reads(monkeypatch) -> list[str]:
    """Paths the integrity module hashes from now on (its per-process memo emptied: as a new process)."""
    monkeypatch.setattr(integrity, "_memo", {})
    reads: list[str] = []
    real = integrity.sha256_file
    monkeypatch.setattr(integrity, "sha256_file", lambda p, *a, **k: (reads.append(str(p)), real(p, *a, **k))[1])
    return reads


def test_a_verified_file_is_not_read_again_by_the_next_process(tmp_path):
    path, side = _aged_file(tmp_path / "f")
    assert _verify_in_a_new_process(path.parent, side) == [str(path)]
    stamp = json.loads((path.parent / integrity.STAMP_FILE).read_text(encoding="utf-8"))
    st = path.stat()
    assert stamp["files"]["big.bin"] == {"sha256": side["files"]["big.bin"], "inode": st.st_ino,
                                         "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns}
    assert _verify_in_a_new_process(path.parent, side) == []  # trusted from the stamp: not read


def test_files_mwa_writes_are_stamped_so_search_never_rehashes_them(finished_run, prepared, tmp_path, monkeypatch):
    photos = Path(json.loads((prepared / "dataset.json").read_text())["source"])
    idx = tmp_path / "idx"
    build_index(photos, finished_run, idx, device="cpu")
    reads = _reads(monkeypatch)
    SearchIndex.load(idx)
    ImageCache(prepared, 32)  # written by prepare through the hashing writer
    assert reads == []


def test_a_changed_byte_with_the_mtime_set_back_is_still_caught(finished_run, prepared, tmp_path, monkeypatch):
    photos = Path(json.loads((prepared / "dataset.json").read_text())["source"])
    idx = tmp_path / "idx"
    build_index(photos, finished_run, idx, device="cpu")
    emb = idx / "embeddings.safetensors"
    st = emb.stat()
    time.sleep(0.05)  # past the clock tick the kernel stamped the write with
    with open(emb, "r+b") as fh:  # in place: same inode, same size
        fh.seek(safetensors_data_start(emb) + 5)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0x01]))
    os.utime(emb, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (emb.stat().st_ino, emb.stat().st_size, emb.stat().st_mtime_ns) == (st.st_ino, st.st_size, st.st_mtime_ns)
    reads = _reads(monkeypatch)
    res = runner.invoke(app, ["search", "a red mark", "--index", str(idx)])
    out = " ".join(res.output.split())
    assert res.exit_code == EXIT_CORRUPT and "embeddings.safetensors is damaged" in out, out
    assert str(emb) in reads


@pytest.mark.parametrize("stamp", ["not json {", '{"version": 1, "files": {"big.bin": "x"}}', "[1, 2]", "stale"])
def test_a_garbage_or_stale_stamp_is_ignored(tmp_path, monkeypatch, stamp):
    path, side = _aged_file(tmp_path / "f", size=1 << 16)
    if stamp == "stale":  # what the file looked like before it was damaged (the stamp matches the record)
        integrity.verify(path.parent, side, ["big.bin"], side_name="side.json", remedy="rewrite it")
        assert "big.bin" in integrity.read_stamps(path.parent)
        flip_bytes(path, 1)
    else:
        (path.parent / integrity.STAMP_FILE).write_text(stamp, encoding="utf-8")
    reads = _reads(monkeypatch)
    if stamp == "stale":
        with pytest.raises(IntegrityError, match="big.bin is damaged"):
            integrity.verify(path.parent, side, ["big.bin"], side_name="side.json", remedy="rewrite it")
        assert "big.bin" in integrity.read_stamps(path.parent)  # kept, and never matching the damaged file
        return
    integrity.verify(path.parent, side, ["big.bin"], side_name="side.json", remedy="rewrite it")
    assert reads == [str(path)]
    assert integrity.read_stamps(path.parent)["big.bin"]["sha256"] == side["files"]["big.bin"]  # replaced


def test_a_stamp_that_cannot_be_written_does_not_fail_the_command(finished_run, prepared, tmp_path, monkeypatch):
    photos = Path(json.loads((prepared / "dataset.json").read_text())["source"])
    idx = tmp_path / "idx"
    build_index(photos, finished_run, idx, device="cpu")
    (idx / integrity.STAMP_FILE).unlink()
    time.sleep(2 * integrity.RACY_NS / 1e9)

    def read_only(path, obj):  # what a read-only folder does to a user (root writes anyway)
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(integrity, "atomic_write_json", read_only)
    idx.chmod(0o555)
    try:
        res = runner.invoke(app, ["search", "a red mark", "--index", str(idx), "--json"])
    finally:
        idx.chmod(0o755)
    assert res.exit_code == 0, res.output
    assert not (idx / integrity.STAMP_FILE).exists()
