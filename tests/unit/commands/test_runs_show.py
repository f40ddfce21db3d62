"""`mwa runs` and `mwa show`: status of each run (finished, running, interrupted, failed), its metric, wall time,
and for a run still training its step and ETA."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mwa_cli.cli import app
from mwa_cli.runs_view import details, list_runs, progress, status
from tests.helpers.report_builder import standard_runs

runner = CliRunner()


def _write(path, obj) -> None:
    path.write_text(json.dumps(obj) if not isinstance(obj, str) else obj, encoding="utf-8")


def _run(runs, name: str, *, timing_status: str | None = None, checkpoint: bool = False, rows: int = 0,
         budget_s: float | None = None, planned: int | None = None):
    run = runs / name
    run.mkdir(parents=True)
    _write(run / ".mwa-run", {"kind": "run"})
    cfg = {"method": "mwa", "backbone": "beit3-mini", "mwa_version": "0.1.0", "budget_s": budget_s,
           "command": f"mwa train data --name {name}"}
    if planned:
        cfg["plan"] = {"total_steps": planned}
    _write(run / "config.json", cfg)
    _write(run / "metrics.jsonl", "".join(json.dumps({"kind": "train", "step": 10 * (i + 1), "loss": 1.0 / (i + 1),
                                                      "time_s": 20.0 * (i + 1)}) + "\n" for i in range(rows)))
    if timing_status:
        _write(run / "timing.json", {"status": timing_status, "wall_s": 61.0, "steps": 30})
    if checkpoint:
        last = run / "checkpoint" / "last"
        last.mkdir(parents=True)
        (last / "state.pt").write_bytes(b"state")
        _write(last / "meta.json", {"step": 30})
    return run


@pytest.fixture()
def running_writer():
    """A live process whose command line names mwa, as a training process's does."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "mwa", "train"])
    cmdline = Path(f"/proc/{proc.pid}/cmdline")
    deadline = time.monotonic() + 10
    while b"mwa" not in cmdline.read_bytes() and time.monotonic() < deadline:  # until it has exec'd
        time.sleep(0.01)
    yield proc
    proc.kill()
    proc.wait()


def test_each_status_metric_and_wall_time(tmp_path, running_writer):
    _, runs = standard_runs(tmp_path)  # finished runs as `mwa train` writes them
    (runs / "full-ft" / "timing.json").write_text(json.dumps(dict(
        json.loads((runs / "full-ft" / "timing.json").read_text()), status="completed")))
    _run(runs, "stopped", timing_status="interrupted", checkpoint=True)
    _run(runs, "broken", timing_status="nonfinite")
    live = _run(runs, "live", rows=3, budget_s=600.0, planned=100)
    (live / ".lock").write_text(f"mwa process {running_writer.pid}")
    (runs / "notes").mkdir()  # not a run folder: not listed
    rows = {r["name"]: r for r in list_runs(runs)}
    assert set(rows) == {"full-ft", "mwa", "lora", "stopped", "broken", "live"}
    assert rows["full-ft"]["status"] == "finished" and rows["full-ft"]["metric"]["value"] == 460
    assert rows["full-ft"]["wall_s"] == 3600 and rows["full-ft"]["method"] == "full-ft"
    assert rows["stopped"]["status"] == "interrupted" and rows["stopped"]["metric"] is None
    assert rows["broken"]["status"] == "failed"
    assert rows["live"]["status"] == "running" and rows["live"]["wall_s"] == 60.0
    running_writer.kill()
    running_writer.wait()
    assert status(live) == "failed"  # its process is gone and it left no checkpoint


def test_runs_command_table_and_json(tmp_path):
    _run(tmp_path / "runs", "stopped", timing_status="interrupted", checkpoint=True)
    res = runner.invoke(app, ["runs", str(tmp_path / "runs")], env={"COLUMNS": "150"})
    assert res.exit_code == 0 and "stopped" in res.output and "interrupted" in res.output
    js = runner.invoke(app, ["runs", str(tmp_path / "runs"), "--json"])
    assert json.loads(js.stdout)[0]["status"] == "interrupted"
    missing = runner.invoke(app, ["runs", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "no such folder" in missing.output


def test_runs_takes_its_folder_as_report_does(tmp_path, monkeypatch):
    _run(tmp_path / "runs", "stopped", timing_status="interrupted", checkpoint=True)
    by_option = runner.invoke(app, ["runs", "--runs", str(tmp_path / "runs"), "--json"])
    assert by_option.exit_code == 0 and [r["name"] for r in json.loads(by_option.stdout)] == ["stopped"]
    both = runner.invoke(app, ["runs", str(tmp_path / "runs"), "--runs", str(tmp_path / "runs"), "--json"])
    assert both.exit_code == 0 and json.loads(both.stdout) == json.loads(by_option.stdout)
    other = runner.invoke(app, ["runs", str(tmp_path), "--runs", str(tmp_path / "runs")])
    assert other.exit_code == 2 and "two folders given" in " ".join(other.output.split())
    monkeypatch.chdir(tmp_path)  # neither: runs/ of the current folder, as before
    plain = runner.invoke(app, ["runs", "--json"])
    assert plain.exit_code == 0 and [r["name"] for r in json.loads(plain.stdout)] == ["stopped"]


def test_show_a_running_run_gives_its_step_and_eta(tmp_path, running_writer):
    live = _run(tmp_path / "runs", "live", rows=3, budget_s=600.0, planned=100)
    (live / ".lock").write_text(f"mwa process {running_writer.pid}")
    d = details(live)
    p = d["progress"]
    assert d["status"] == "running" and p["step"] == 30 and p["planned_steps"] == 100
    assert p["eta_basis"] == "budget" and 530 <= p["eta_s"] <= 540  # 600 s − 60 s elapsed − the time since
    res = runner.invoke(app, ["show", "live", "--out", str(tmp_path / "runs")], env={"COLUMNS": "150"})
    assert res.exit_code == 0, res.output
    assert "progress: step 30 of 100" in res.output
    assert re.search(r"ETA: about (9 min 00 s|8 min 5\d s) left \(at most, under its budget\)", res.output)


def test_eta_from_the_step_rate_without_a_budget(tmp_path):
    run = _run(tmp_path, "r", rows=2, planned=100)
    cfg = json.loads((run / "config.json").read_text())
    p = progress(run, cfg, now=(run / "metrics.jsonl").stat().st_mtime + 5.0)
    assert p["eta_basis"] == "step rate" and p["eta_s"] == pytest.approx((100 - 20) * 40.0 / 20 - 5.0)


def test_show_an_interrupted_run_says_how_to_resume_and_json(tmp_path):
    run = _run(tmp_path / "runs", "stopped", timing_status="interrupted", checkpoint=True, rows=3)
    res = runner.invoke(app, ["show", str(run)], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and f"resume with: mwa train --resume {run}" in res.output
    d = json.loads(runner.invoke(app, ["show", str(run), "--json"]).stdout)
    assert d["status"] == "interrupted" and d["progress"]["eta_s"] is None and d["checkpoint"].endswith("last")
    assert d["config"]["method"] == "mwa"
    bad = runner.invoke(app, ["show", "nope", "--out", str(tmp_path / "runs")])
    assert bad.exit_code == 2 and "mwa runs" in bad.output


def test_a_finished_run_shows_its_test_metrics(tmp_path):
    _, runs = standard_runs(tmp_path)
    timing = json.loads((runs / "mwa" / "timing.json").read_text())
    (runs / "mwa" / "timing.json").write_text(json.dumps(dict(timing, status="completed")))
    res = runner.invoke(app, ["show", str(runs / "mwa")], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "finished" in res.output and "RSUM 448.00" in res.output
