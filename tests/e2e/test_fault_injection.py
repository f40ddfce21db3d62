"""Kill `mwa train`, `mwa prepare` and `mwa index` with SIGKILL at random instants; after every kill, running the
command again (or `mwa train --resume`) succeeds, its results equal an uninterrupted run's, and nothing is left
behind (no staging or temporary file, no half-written checkpoint).

Each command runs in a real process forked from this one (the CLI's own entry, `mwa_cli.cli.app`): the modules are
already imported, so the whole of a process's life is the command's work and a random instant lands in it (in a
fresh interpreter most of it would be spent importing torch). The kill instants are drawn uniformly over an
uninterrupted run's duration, seeded. The default run kills each command 3 times; the soak (`python -m pytest -m soak`, deselected
otherwise) 50 times each; docs/benchmarks.md has its numbers.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

import mwa_cli.data.prepare  # noqa: F401 - imported here, not in every forked process (see the docstring)
import mwa_cli.eval.evaluate  # noqa: F401
import mwa_cli.search.build  # noqa: F401
import mwa_cli.train.loop  # noqa: F401
from mwa_cli.train.checkpoint import find_checkpoint
from tests.helpers.photos import make_photos

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]
DEFAULT_KILLS = 3
SOAK_KILLS = 50
TEMP_NAMES = (".staging_", ".caching_", ".tmp-")


# ------------------------------------------------------------------------------------------------ processes
def spawn(argv: list[str], log: Path) -> int:
    """Start `mwa ARGV` in a forked process (stdout and stderr to `log`); returns its pid."""
    pid = os.fork()
    if pid == 0:  # the child: run the command, never return into pytest
        code = 98
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - the process ends with os._exit
            sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
            from mwa_cli.cli import app

            app(args=argv, prog_name="mwa", standalone_mode=True)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return pid


def run(argv: list[str], log: Path) -> int:
    """Run `mwa ARGV` to its end in a forked process; its exit code."""
    _, status = os.waitpid(spawn(argv, log), 0)
    return os.waitstatus_to_exitcode(status)


def run_killed(argv: list[str], log: Path, delay: float) -> bool:
    """Start `mwa ARGV`, SIGKILL it after `delay` seconds; False when it had already ended by then."""
    pid = spawn(argv, log)
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return False
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == -signal.SIGKILL


def timed(argv: list[str], log: Path) -> float:
    t0 = time.monotonic()
    code = run(argv, log)
    assert code == 0, log.read_text()[-3000:]
    return time.monotonic() - t0


def leftovers(folder: Path) -> list[str]:
    """Temporary files anywhere under `folder`: staging files, atomic writes' temporaries, half checkpoints."""
    return [str(p.relative_to(folder)) for p in folder.rglob("*")
            if p.name.startswith(TEMP_NAMES) or (p.name.startswith(".") and p.name.endswith(".tmp"))
            or p.name.startswith("feature_cache_")]


def files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


# ------------------------------------------------------------------------------------------------ the commands
def photo_folder(root: Path, n: int = 24) -> Path:
    return make_photos(root, n=n)


class Train:
    """`mwa train` on the tiny backbone, a checkpoint at every step so that kills land in checkpoint writes too."""

    name = "train"

    def __init__(self, root: Path, data: Path, tok: Path):
        self.root, self.data, self.tok = root, data, tok

    def argv(self, name: str) -> list[str]:
        return ["train", str(self.data), "--backbone", "beit3-tiny-test", "--tokenizer", str(self.tok), "--out",
                str(self.root / "runs"), "--name", name, "--steps", "6", "--batch-size", "8", "--lr", "1e-3",
                "--seed", "0", "--checkpoint-every", "1", "--log-every", "1", "--val-evals", "1", "--workers", "0",
                "--device", "cpu", "--quiet"]

    def output(self, name: str) -> Path:
        return self.root / "runs" / name

    def again(self, name: str, log: Path) -> int:
        """What the user does after a kill: resume when a checkpoint exists, else the same command again."""
        run_dir = self.output(name)
        finished = (run_dir / "eval.json").is_file() and (run_dir / "adapter_model.safetensors").is_file()
        if finished:
            return 0
        if find_checkpoint(run_dir) is not None:
            return run(["train", "--resume", str(run_dir), "--quiet"], log)
        return run(self.argv(name), log)

    def result(self, name: str) -> dict:
        run_dir = self.output(name)
        ev = json.loads((run_dir / "eval.json").read_text(encoding="utf-8"))
        for volatile in ("seconds", "created"):
            ev.pop(volatile, None)
        steps = [json.loads(x)["step"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()
                 if json.loads(x)["kind"] == "train"]
        assert steps == sorted(set(steps)), steps  # every step logged once, in order
        return {"eval": ev, "steps": steps,
                "weights": {k: v.tolist() for k, v in load_file(run_dir / "adapter_model.safetensors").items()},
                "files": files(run_dir)}


class Prepare:
    name = "prepare"

    def __init__(self, root: Path, photos: Path):
        self.root, self.photos = root, photos

    def argv(self, name: str) -> list[str]:
        return ["prepare", str(self.photos), "--out", str(self.output(name)), "--image-size", "32", "--workers",
                "1", "--json"]

    def output(self, name: str) -> Path:
        return self.root / "data" / name

    def again(self, name: str, log: Path) -> int:
        return run(self.argv(name), log)

    def result(self, name: str) -> dict:
        out = self.output(name)
        info = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
        info.pop("created")
        return {"dataset": info, "files": files(out),
                **{f: (out / f).read_bytes() for f in ("manifest.csv", "rejected.csv", "data_report.json",
                                                       "cache/images_32.u8", "cache/images_32.json")}}


class Index:
    name = "index"

    def __init__(self, root: Path, photos: Path, adapter: Path):
        self.root, self.photos, self.adapter = root, photos, adapter

    def argv(self, name: str) -> list[str]:
        return ["index", str(self.photos), "--adapter", str(self.adapter), "--out", str(self.output(name)),
                "--device", "cpu", "--workers", "1", "--batch-size", "4", "--json"]

    def output(self, name: str) -> Path:
        return self.root / "indexes" / name

    def again(self, name: str, log: Path) -> int:
        return run(self.argv(name), log)

    def result(self, name: str) -> dict:
        out = self.output(name)
        meta = json.loads((out / "index.json").read_text(encoding="utf-8"))
        emb = load_file(out / "embeddings.safetensors")
        return {"files": files(out), "manifest": (out / "manifest.csv").read_bytes(),
                "images": emb["images"].tolist(), "identity": meta["identity"], "dim": meta["dim"],
                "recorded": {k: v for k, v in meta["files"].items() if k != "embeddings.safetensors"}}


def kill_and_recover(cmd, kills: int, seed: int, tmp_path: Path, *, second_reference: bool = False) -> dict:
    """Cycles of: start the command, SIGKILL it at a random instant, run it again, compare the result with an
    uninterrupted run's; until `kills` kills have landed in a running command (a draw after its end is a cycle
    without a kill, still checked). `second_reference`: time a second uninterrupted run too (the first in a process
    may import more, so the second's time spreads the kills better) and check it equals the first. Returns the
    counts (kills, cycles, passes, seconds)."""
    t0 = time.monotonic()
    log = tmp_path / f"{cmd.name}.log"
    duration = timed(cmd.argv("ref"), log)
    reference = cmd.result("ref")
    if second_reference:
        duration = min(duration, timed(cmd.argv("ref2"), log))
        assert cmd.result("ref2") == reference, f"{cmd.name}: two uninterrupted runs differ"
    rng = random.Random(seed)
    landed = cycles = 0
    while landed < kills:
        assert cycles < 4 * kills, f"{cmd.name}: only {landed} of {cycles} kills landed in a running command"
        name = f"k{cycles}"
        landed += run_killed(cmd.argv(name), log, rng.uniform(0.0, duration))
        code = cmd.again(name, log)
        assert code == 0, f"{cmd.name} cycle {cycles}: the re-run exited {code}\n" + log.read_text()[-3000:]
        assert not leftovers(cmd.output(name)), (cmd.name, cycles, leftovers(cmd.output(name)))
        assert cmd.result(name) == reference, f"{cmd.name} cycle {cycles}: results differ from the uninterrupted run"
        cycles += 1
    return {"command": cmd.name, "kills": landed, "cycles": cycles, "passed": cycles,
            "seconds": round(time.monotonic() - t0, 1), "run_s": round(duration, 2)}


@pytest.fixture(scope="module")
def trained(train_data_dir, train_tokenizer, tmp_path_factory) -> Path:
    """A finished run whose adapter `mwa index` uses."""
    root = tmp_path_factory.mktemp("fi_adapter")
    cmd = Train(root, train_data_dir, train_tokenizer)
    assert run(cmd.argv("a"), root / "log") == 0, (root / "log").read_text()[-3000:]
    return cmd.output("a")


def _commands(tmp_path: Path, data: Path, tok: Path, adapter: Path) -> dict:
    photos = photo_folder(tmp_path / "photos", n=48)
    return {"train": Train(tmp_path, data, tok), "prepare": Prepare(tmp_path, photos),
            "index": Index(tmp_path, photos, adapter)}


@pytest.mark.parametrize("command", ["train", "prepare", "index"])
def test_a_killed_command_recovers(command, tmp_path, train_data_dir, train_tokenizer, trained):
    cmd = _commands(tmp_path, train_data_dir, train_tokenizer, trained)[command]
    stats = kill_and_recover(cmd, DEFAULT_KILLS, seed=sum(map(ord, command)), tmp_path=tmp_path)
    assert stats["kills"] == DEFAULT_KILLS and stats["passed"] == stats["cycles"]
    print(json.dumps(stats))


@pytest.mark.slow
@pytest.mark.soak  # ~8 minutes: deselected by default (pyproject), run with `python -m pytest -m soak`
@pytest.mark.parametrize("command", ["train", "prepare", "index"])
def test_soak_many_kills(command, tmp_path, train_data_dir, train_tokenizer, trained):
    cmd = _commands(tmp_path, train_data_dir, train_tokenizer, trained)[command]
    stats = kill_and_recover(cmd, SOAK_KILLS, seed=1000 + sum(map(ord, command)), tmp_path=tmp_path,
                             second_reference=True)
    assert stats["kills"] == SOAK_KILLS and stats["passed"] == stats["cycles"]
    print(json.dumps(stats), flush=True)
