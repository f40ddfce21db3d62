"""The torch-free parts of mwa_cli.train.dist: the launch environment, rank 0's result file, peer-loss errors."""

from __future__ import annotations

import json
import subprocess
import sys

from mwa_cli.train.dist.env import ENV_RESULT, RESULT_DIR_PREFIX, launched_by_mwa, under_torchrun
from mwa_cli.train.dist.handoff import write_result
from mwa_cli.train.dist.peer_loss import is_peer_loss
from tests.helpers.paths import REPO


def _as_rank(monkeypatch, rank: int = 0) -> None:
    for key, value in {"RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank)}.items():
        monkeypatch.setenv(key, value)


def test_rank_0_leaves_its_result_whole_in_the_launchers_folder(tmp_path, monkeypatch):
    folder = tmp_path / f"{RESULT_DIR_PREFIX}x"
    folder.mkdir()
    _as_rank(monkeypatch)
    monkeypatch.setenv(ENV_RESULT, str(folder / "result.json"))
    assert under_torchrun() and launched_by_mwa()
    write_result({"exit_code": 3, "run_dir": tmp_path / "run"})  # a path is written as text
    assert json.loads((folder / "result.json").read_text()) == {"exit_code": 3, "run_dir": str(tmp_path / "run")}
    assert [p.name for p in folder.iterdir()] == ["result.json"]  # no temporary file left beside it


def test_only_rank_0_and_only_into_the_launchers_folder(tmp_path, monkeypatch):
    other = tmp_path / "elsewhere"
    other.mkdir()
    _as_rank(monkeypatch)
    monkeypatch.setenv(ENV_RESULT, str(other / "result.json"))
    write_result({"exit_code": 0})
    assert not (other / "result.json").exists()


def test_peer_loss_is_recognised_by_type_and_by_the_backends_words():
    DistBackendError = type("DistBackendError", (RuntimeError,), {})
    assert is_peer_loss(DistBackendError("anything"))
    assert is_peer_loss(RuntimeError("[gloo] Connection closed by peer [127.0.0.1]:29500"))
    assert not is_peer_loss(RuntimeError("CUDA out of memory"))
    assert not is_peer_loss(ValueError("broken pipe"))  # only the errors torch raises for a lost peer


def test_the_torch_free_modules_do_not_import_torch():
    script = ("import sys\n"
              "import mwa_cli.train.dist.env, mwa_cli.train.dist.peer_loss\n"
              "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"
