"""The search on the tiny backbone, in process: trials are real run folders, the study lives in the tune folder's
journal, pruned and failed trials are marked as such, a second run continues the same search (an interrupted trial
from its checkpoint), and a run with other settings is refused without touching anything."""

from __future__ import annotations

import json

import optuna
import pytest

from mwa_cli.errors import ConfigError, DataError, MwaError
from mwa_cli.runs_view import status
from mwa_cli.train.config import load_config_file
from mwa_cli.tune import trials as trials_mod
from mwa_cli.tune.layout import JOURNAL, PAGE, SETTINGS, TRIALS
from mwa_cli.tune.search import run_tune, rung_times_s
from mwa_cli.tune.settings import TuneSettings

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def settings(data, tok, out, **kw) -> TuneSettings:
    base = dict(data_dir=str(data), methods=("mwa",), backbone="beit3-tiny-test", tokenizer=str(tok), device="cpu",
                trial_steps=6, max_trials=3, out=str(out), name="t")
    return TuneSettings(**{**base, **kw})


def study_states(folder, method="mwa") -> list[str]:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(folder / JOURNAL)))
    study = optuna.load_study(study_name=method, storage=storage)
    return [t.state.name for t in study.get_trials() if t.state.name != "WAITING"]


def test_a_tune_writes_trials_study_recommendation_and_page(train_data_dir, train_tokenizer, tmp_path):
    events = []
    result = run_tune(settings(train_data_dir, train_tokenizer, tmp_path),
                      lambda e, d: events.append((e, d)) if e.startswith(("trial", "tune")) else None)
    folder = tmp_path / "t"
    assert result.folder == folder and (folder / SETTINGS).is_file() and (folder / JOURNAL).is_file()
    names = sorted(p.name for p in (folder / TRIALS).iterdir())
    assert names == ["mwa-t000", "mwa-t001", "mwa-t002"]
    for name in names:
        run = folder / TRIALS / name
        assert json.loads((run / "eval.json").read_text())["split"] == "val"  # the test split stays untouched
        assert not (run / "checkpoint").exists()  # a finished trial keeps its results, not its training state
        assert json.loads((run / "config.json").read_text())["tune"] == str(folder.resolve())
    # checked at the pruner's rungs: none before a trial finished (--trial-steps), then those of its time
    asked = [json.loads((folder / TRIALS / n / "config.json").read_text())["val_at"] for n in names]
    assert asked[0] == [] and asked[1] and asked[1] == sorted(asked[1])
    # the defaults first, then the top half from the feature cache
    first = [d["params"] for e, d in events if e == "trial"][:2]
    assert first[0]["layers"] == "all" and first[1] == dict(first[0], layers="top-1", feature_cache="auto")
    m = result.methods[0]
    assert m.recommendation.chosen is not None and m.config_path == folder / "recommended-mwa.toml"
    values = load_config_file(m.config_path)
    chosen = m.recommendation.chosen
    assert values["lr"] == pytest.approx(chosen.params["lr"]) and values["steps"] == 6
    assert values["method_options"]["layers"] == chosen.params["layers"]
    assert m.command == f"mwa train {train_data_dir} --config {m.config_path}"
    saved = json.loads((folder / SETTINGS).read_text())
    assert saved["result"]["mwa"]["chosen"] == chosen.name and saved["spent_s"]["mwa"] > 0
    html = (folder / PAGE).read_text(encoding="utf-8")
    assert chosen.name in html and "★ chosen" in html and "<script" not in html.lower()
    by_state = {"complete": "COMPLETE", "pruned": "PRUNED"}
    assert study_states(folder) == [by_state[r.state] for r in m.records]
    assert [status(folder / TRIALS / r.name) for r in m.records] == [
        "finished" if r.state == "complete" else "pruned" for r in m.records]

    # the same command again with more trials continues: the finished trials stay as they were
    before = {n: (folder / TRIALS / n / "eval.json").read_bytes() for n in names}
    again = run_tune(settings(train_data_dir, train_tokenizer, tmp_path, max_trials=4))
    assert len(again.methods[0].records) == 4 and (folder / TRIALS / "mwa-t003" / "eval.json").is_file()
    assert {n: (folder / TRIALS / n / "eval.json").read_bytes() for n in names} == before

    # other settings are refused, naming what differs; nothing changes
    journal = (folder / JOURNAL).read_bytes()
    with pytest.raises(ConfigError, match="seed: 0 then, 1 now"):
        run_tune(settings(train_data_dir, train_tokenizer, tmp_path, seed=1, max_trials=9))
    assert (folder / JOURNAL).read_bytes() == journal

    # a tolerance changed afterwards only recomputes the recommendation
    wide = run_tune(settings(train_data_dir, train_tokenizer, tmp_path, max_trials=4, tolerance=0.4))
    assert len(wide.methods[0].records) == 4 and (folder / JOURNAL).read_bytes() == journal


def test_pruned_trials_are_marked_pruned_in_the_study_and_the_run_folder(train_data_dir, train_tokenizer, tmp_path):
    never_good_enough = optuna.pruners.ThresholdPruner(lower=1e9)
    result = run_tune(settings(train_data_dir, train_tokenizer, tmp_path, max_trials=3), pruner=never_good_enough)
    folder = tmp_path / "t"
    # the two enqueued references (the defaults, the top half from the cache) run whole; the third is pruned
    assert study_states(folder) == ["COMPLETE", "COMPLETE", "PRUNED"]
    states = [(rec.state, status(folder / TRIALS / rec.name)) for rec in result.methods[0].records]
    assert states == [("complete", "finished"), ("complete", "finished"), ("pruned", "pruned")]
    pruned = result.methods[0].records[2]
    assert json.loads((folder / TRIALS / pruned.name / "timing.json").read_text())["status"] == "pruned"
    m = result.methods[0]
    assert m.recommendation.chosen is not None and m.recommendation.chosen.name != pruned.name
    assert (folder / "recommended-mwa.toml").is_file() and (folder / PAGE).is_file()


def test_an_interrupted_trial_continues_from_its_checkpoint(train_data_dir, train_tokenizer, tmp_path,
                                                            monkeypatch):
    seen = []

    def stop_in_trial_1(event, data):  # a second Ctrl-C inside trial 1, after its first checkpoint
        if event == "trial":
            seen.append((data["name"], data["resumed"]))
        if event == "checkpoint" and seen[-1][0] == "mwa-t001":
            raise KeyboardInterrupt

    s = settings(train_data_dir, train_tokenizer, tmp_path, trial_steps=12)
    with pytest.raises(KeyboardInterrupt):
        run_tune(s, stop_in_trial_1)
    folder = tmp_path / "t"
    assert study_states(folder) == ["COMPLETE", "RUNNING"]
    assert status(folder / TRIALS / "mwa-t001") == "interrupted"
    done = (folder / TRIALS / "mwa-t000" / "eval.json").read_bytes()
    seen.clear()
    result = run_tune(s, lambda e, d: seen.append((d["name"], d["resumed"])) if e == "trial" else None)
    assert seen == [("mwa-t001", True), ("mwa-t002", False)]
    assert {r.state for r in result.methods[0].records} <= {"complete", "pruned"}
    text = (folder / TRIALS / "mwa-t001" / "metrics.jsonl").read_text()
    assert json.loads(text.splitlines()[-1])["step"] == 12  # trained to its end after the resume
    assert (folder / TRIALS / "mwa-t000" / "eval.json").read_bytes() == done


def test_a_failed_trial_is_kept_and_the_search_goes_on(train_data_dir, train_tokenizer, tmp_path, monkeypatch):
    real = trials_mod.train

    def flaky(cfg, progress):
        if cfg.name == "mwa-t001":
            raise ConfigError("this configuration cannot run", hint="a test's reason")
        return real(cfg, progress)

    monkeypatch.setattr(trials_mod, "train", flaky)
    result = run_tune(settings(train_data_dir, train_tokenizer, tmp_path))
    states = {r.name: r for r in result.methods[0].records}
    assert states["mwa-t001"].state == "failed" and "this configuration cannot run" in states["mwa-t001"].error
    assert states["mwa-t000"].state != "failed" and states["mwa-t002"].state != "failed"
    assert result.methods[0].recommendation.chosen.name != "mwa-t001"


def test_a_failing_default_configuration_ends_the_tune_with_its_message(train_data_dir, train_tokenizer, tmp_path,
                                                                        monkeypatch):
    def broken(cfg, progress):
        raise DataError("the photos cannot be read", hint="re-run mwa prepare")

    monkeypatch.setattr(trials_mod, "train", broken)
    with pytest.raises(MwaError, match="first trial of mwa .* failed: the photos cannot be read"):
        run_tune(settings(train_data_dir, train_tokenizer, tmp_path))


def test_a_folder_marked_by_a_run_killed_before_it_wrote_tune_json_starts_afresh(train_data_dir, train_tokenizer,
                                                                                   tmp_path):
    from mwa_cli.outdir import write_marker

    folder = tmp_path / "t"
    folder.mkdir()
    write_marker(folder, "tune")
    result = run_tune(settings(train_data_dir, train_tokenizer, tmp_path, max_trials=1))
    assert [r.name for r in result.methods[0].records] == ["mwa-t000"] and (folder / SETTINGS).is_file()


def test_rungs_start_at_a_sixth_of_a_trial_and_grow_threefold():
    assert rung_times_s(optuna, "halving", {"budget_s": 25}, None) == [4.166, 12.498]
    assert rung_times_s(optuna, "hyperband", {"budget_s": 60}, None) == [10.0, 30.0]
    assert rung_times_s(optuna, "none", {"budget_s": 25}, None) == []
    no_trial_finished = optuna.create_study()
    assert rung_times_s(optuna, "halving", {"steps": 6}, no_trial_finished) == []
