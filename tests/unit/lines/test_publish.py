"""The line store: adding lines, publishing runs as versions (copies, provenance, held-out evaluation), the rules
that refuse a run (full fine-tuning, frozen, another backbone, worse on the held-out set, unfinished, already
published), the recorded override, rollback, one writer at a time, and what a killed publish leaves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mwa_cli.errors import EXIT_CORRUPT, EXIT_DATA, EXIT_USAGE, MwaError
from mwa_cli.eval.bootstrap import QueryRanks
from mwa_cli.lines import heldout
from mwa_cli.lines.publish import publish, rollback
from mwa_cli.lines.store import LineStore
from tests.helpers.paths import REPO

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_add_makes_the_layout_and_refuses_bad_names_and_foreign_folders(store, sample, tmp_path):
    line = LineStore.create(store).add("line-3", data_dir=sample.data)
    assert (store / ".mwa-lines").is_file() and (store / "line-3" / "line.json").is_file()
    assert line.current is None and line.history == []
    held = line.held_out
    assert held["split"] == "test" and held["n_images"] == 32 and held["set_by"] == "line add"
    assert LineStore.create(store).add("第3ライン").held_out is None  # any script; held-out set at first publish
    assert LineStore.open(store).names() == ["line-3", "第3ライン"]
    with pytest.raises(MwaError, match="already exists"):
        LineStore.create(store).add("line-3")
    for bad in ["../up", ".hidden", "a/b", "", "x" * 65, "-dash"]:
        with pytest.raises(MwaError, match="cannot be a line name") as exc:
            LineStore.create(store).add(bad)
        assert exc.value.exit_code == EXIT_USAGE
    with pytest.raises(MwaError, match="split of .* is empty"):
        LineStore.create(store).add("line-9", data_dir=sample.data, split="val")
    assert not (store / "line-9").exists()
    foreign = tmp_path / "docs"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(MwaError, match="files mwa did not write"):
        LineStore.create(foreign).add("line-3")
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    with pytest.raises(MwaError, match="no line store") as exc:
        LineStore.open(tmp_path / "nowhere")
    assert exc.value.exit_code == EXIT_DATA


def test_publish_copies_the_run_with_its_provenance_and_the_next_one_is_compared(store, sample):
    LineStore.create(store).add("line-3")  # no --data: the first publish takes the run's own data dir and split
    first = publish(store, "line-3", sample.good1, device="cpu")
    assert first["version"] == 1 and first["previous"] is None and first["check"] is None
    line = LineStore.open(store).line("line-3")
    assert line.current == 1 and line.held_out["data_dir"] == str(sample.data.resolve())
    assert line.held_out["set_by"] == "first publish" and line.backbone["name"] == "beit3-mini"
    v1 = store / "line-3" / "v1"
    for name in ["adapter_model.safetensors", "adapter_config.json", "config.json", "eval.json", "eval_ranks.json",
                 "held_out/eval.json", "held_out/eval_ranks.json", "version.json"]:
        assert (v1 / name).is_file(), name
    assert (v1 / "adapter_model.safetensors").read_bytes() == (sample.good1 / "adapter_model.safetensors").read_bytes()
    rec = json.loads((v1 / "version.json").read_text())
    assert set(rec["files"]) >= {"adapter_model.safetensors", "adapter_config.json", "held_out/eval.json"}
    assert rec["backbone"]["weights_sha256"] and rec["dataset_hash"] and rec["run"]["path"] == str(sample.good1)
    assert rec["config"]["seed"] == 0 and rec["identity"]["method"] == "mwa"
    run_eval = json.loads((sample.good1 / "eval.json").read_text())
    assert rec["run_eval"]["rsum"] == pytest.approx(run_eval["rsum"])  # the run's own number, with its interval
    lo, hi = rec["run_eval"]["ci95"]["rsum"]
    assert lo <= run_eval["rsum"] <= hi and hi > lo
    assert rec["held_out"]["rsum"] == pytest.approx(run_eval["rsum"])  # same photos: same number
    second = publish(store, "line-3", sample.good2, device="cpu")
    check = second["check"]
    assert second["version"] == 2 and second["previous"] == 1 and check["against"] == 1 and not check["worse"]
    assert check["difference"]["rsum"] == pytest.approx(check["candidate"]["rsum"] - check["current"]["rsum"])
    line = LineStore.open(store).line("line-3")
    assert line.current == 2 and [e["action"] for e in line.history] == ["publish", "publish"]
    assert line.history[-1]["from"] == 1 and "@" in line.history[-1]["by"]


def test_a_worse_adapter_is_refused_unless_forced_with_a_reason_which_is_recorded(store, sample):
    LineStore.create(store).add("line-3", data_dir=sample.data)
    publish(store, "line-3", sample.good1, device="cpu")
    before = _snapshot(store)
    with pytest.raises(MwaError, match=r"not published: .*mean recall is .* below the interval of the current "
                                       r"version v1") as exc:
        publish(store, "line-3", sample.bad, device="cpu")
    assert exc.value.exit_code == EXIT_USAGE and "--force-worse" in exc.value.hint
    assert _snapshot(store) == before  # nothing written, the line keeps v1
    with pytest.raises(MwaError, match="--force-worse needs --why"):
        publish(store, "line-3", sample.bad, device="cpu", force_worse=True)
    res = publish(store, "line-3", sample.bad, device="cpu", force_worse=True, why="new defect type on the line")
    assert res["version"] == 2 and res["check"]["worse"]
    forced = json.loads((store / "line-3" / "v2" / "version.json").read_text())["check"]["forced"]
    assert forced["why"] == "new defect type on the line" and "@" in forced["by"] and forced["at"]
    assert LineStore.open(store).line("line-3").history[-1]["forced"] is True


def test_the_rule_compares_with_the_current_versions_interval():
    n = 40
    t2i = np.repeat(np.arange(n), 2)
    rng = np.random.default_rng(0)
    good_i2t, good_t2i = rng.integers(1, 8, n), rng.integers(1, 8, 2 * n)
    perfect = QueryRanks(good_i2t, good_t2i, t2i)  # the current version: good, with some spread
    poor = QueryRanks(rng.integers(1, 30, n), rng.integers(1, 30, 2 * n), t2i)
    slightly = QueryRanks(good_i2t + (np.arange(n) < 2), good_t2i, t2i)  # two queries one rank lower
    ev = {"split": "test", "rsum": 0.0, "i2t": {}, "t2i": {}}

    def result(qr: QueryRanks) -> dict:
        from mwa_cli.eval.bootstrap import point_metrics

        m = point_metrics(qr)
        return dict(ev, rsum=m["rsum"], i2t={"r1": m["i2t_r1"]}, t2i={"r1": m["t2i_r1"]})

    assert heldout.compare((result(poor), poor), (result(perfect), perfect), 1)["worse"]
    assert not heldout.compare((result(slightly), slightly), (result(perfect), perfect), 1)["worse"]
    assert not heldout.compare((result(perfect), perfect), (result(poor), poor), 1)["worse"]


@pytest.mark.parametrize("kind,message", [("full_ft", "full fine-tuning run"), ("frozen", "trained nothing"),
                                          ("tiny", "the line's backbone is beit3-mini")])
def test_runs_that_cannot_be_a_lines_adapter_are_refused(store, sample, kind, message):
    LineStore.create(store).add("line-3", data_dir=sample.data)
    publish(store, "line-3", sample.good1, device="cpu")
    before = _snapshot(store)
    with pytest.raises(MwaError, match=message) as exc:
        publish(store, "line-3", getattr(sample, kind), device="cpu")
    assert exc.value.exit_code == EXIT_USAGE and exc.value.hint
    assert _snapshot(store) == before


def test_an_unfinished_or_already_published_run_is_refused(store, sample, tmp_path):
    import shutil

    LineStore.create(store).add("line-3", data_dir=sample.data)
    publish(store, "line-3", sample.good1, device="cpu")
    with pytest.raises(MwaError, match="already version 1 of line line-3"):
        publish(store, "line-3", sample.good1, device="cpu")
    running = shutil.copytree(sample.good2, tmp_path / "running")
    (running / "eval.json").unlink()
    with pytest.raises(MwaError, match="has not finished"):
        publish(store, "line-3", running, device="cpu")
    with pytest.raises(MwaError, match="no line named 'line-4'"):
        publish(store, "line-4", sample.good2, device="cpu")


def test_rollback_goes_back_one_version_or_to_the_one_named_and_checks_it_first(store, sample):
    LineStore.create(store).add("line-3", data_dir=sample.data)
    with pytest.raises(MwaError, match="nothing is published"):
        rollback(store, "line-3")
    publish(store, "line-3", sample.good1, device="cpu")
    with pytest.raises(MwaError, match="first version"):
        rollback(store, "line-3")
    publish(store, "line-3", sample.good2, device="cpu")
    publish(store, "line-3", sample.bad, device="cpu", force_worse=True, why="trial")
    assert rollback(store, "line-3", why="false rejects")["version"] == 2
    assert rollback(store, "line-3")["version"] == 1
    assert rollback(store, "line-3", 3)["version"] == 3  # any published version, forward too
    with pytest.raises(MwaError, match="already the current"):
        rollback(store, "line-3", 3)
    with pytest.raises(MwaError, match="has no version 7"):
        rollback(store, "line-3", 7)
    line = LineStore.open(store).line("line-3")
    assert [(e["action"], e["version"]) for e in line.history][-3:] == [("rollback", 2), ("rollback", 1),
                                                                        ("rollback", 3)]
    assert line.history[-3]["why"] == "false rejects"
    # a damaged version is not made current
    weights = store / "line-3" / "v2" / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(MwaError, match="damaged or was changed") as exc:
        rollback(store, "line-3", 2)
    assert exc.value.exit_code == EXIT_CORRUPT and LineStore.open(store).line("line-3").current == 3


def test_one_writer_at_a_time(store, sample):
    LineStore.create(store).add("line-3", data_dir=sample.data)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from mwa_cli.outdir import FolderLock; "
         f"FolderLock({str(store / 'line-3')!r}, 'line').acquire(); print('held', flush=True); time.sleep(60)"],
        env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(MwaError, match=f"production line .* is being written by mwa process {holder.pid}"):
            publish(store, "line-3", sample.good1, device="cpu")
        with pytest.raises(MwaError, match="is being written"):
            rollback(store, "line-3")
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert LineStore.open(store).line("line-3").current is None
    assert publish(store, "line-3", sample.good1, device="cpu")["version"] == 1  # free again


def test_what_a_killed_publish_left_is_removed_by_the_next_one(store, sample):
    LineStore.create(store).add("line-3", data_dir=sample.data)
    publish(store, "line-3", sample.good1, device="cpu")
    line_dir = store / "line-3"
    (line_dir / "v2").mkdir()  # renamed into place, killed before the pointer moved
    (line_dir / "v2" / "adapter_model.safetensors").write_bytes(b"half")
    (line_dir / ".tmp-123-456").mkdir()  # killed while filling
    assert LineStore.open(store).line("line-3").current == 1  # readers never see them
    res = publish(store, "line-3", sample.good2, device="cpu")
    assert res["version"] == 2 and not (line_dir / ".tmp-123-456").exists()
    assert LineStore.open(store).line("line-3").verify_version(2)["run"]["path"] == str(sample.good2)


def test_a_tampered_version_is_refused_on_load(store, sample):
    from mwa_cli.lines.shared import SharedBackbones

    LineStore.create(store).add("line-3", data_dir=sample.data)
    publish(store, "line-3", sample.good1, device="cpu")
    line = LineStore.open(store).line("line-3")
    assert line.verify_version(1)["version"] == 1
    held = store / "line-3" / "v1" / "held_out" / "eval.json"
    text = held.read_text()
    held.write_text(text.replace('"rsum"', '"rsum" ', 1))
    with pytest.raises(MwaError, match="held_out/eval.json is damaged") as exc:
        line.verify_version(1)
    assert exc.value.exit_code == EXIT_CORRUPT and "rollback" in exc.value.hint
    held.write_text(text)
    time.sleep(0.01)
    line.verify_version(1)
    weights = store / "line-3" / "v1" / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(MwaError, match="adapter_model.safetensors is damaged") as exc:
        line.verify_version(1)
    with pytest.raises(MwaError, match="damaged") as exc:
        SharedBackbones("cpu").model_for(store / "line-3" / "v1")
    assert exc.value.exit_code == EXIT_CORRUPT
