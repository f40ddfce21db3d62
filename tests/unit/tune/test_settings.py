"""`mwa tune`'s options and folders: what is refused before anything trains (each with a message that says what to
do, and nothing written), and the derived settings (name, budget split, trial length)."""

from __future__ import annotations

import sys

import pytest
from typer.testing import CliRunner

from mwa_cli.cli import app
from mwa_cli.errors import ConfigError, DataError
from mwa_cli.tune.search import run_tune
from mwa_cli.tune.settings import TuneSettings


def ok(**kw) -> TuneSettings:
    return TuneSettings(**{"data_dir": "data", "backbone": "beit3-mini", "budget": "30m", **kw})


def test_derived_settings():
    s = ok(methods=("mwa", "full-ft"))
    assert s.tune_name == "tune-mwa-vs-full-ft-beit3-mini" and s.method_budget_s == 900
    assert s.trial_length() == {"budget_s": 150.0}  # a method's budget / 6
    assert ok(trial_budget="2m").trial_length() == {"budget_s": 120.0}
    assert ok(trial_steps=40).trial_length() == {"steps": 40}
    assert ok(backbone="hf:/models/My CLIP").tune_name == "tune-mwa-hf-models-My-CLIP"


@pytest.mark.parametrize("kw, message", [
    (dict(budget=None), "give the tune a --budget"),
    (dict(budget=None, max_trials=3), "without --budget each trial needs a length"),
    (dict(budget="soon"), "cannot read the budget"),
    (dict(trial_budget="1m", trial_steps=5), "give one"),
    (dict(methods=("frozen",)), "trains nothing"),
    (dict(methods=("mwa", "mwa")), "is the method tuned already"),
    (dict(methods=("adapterx",)), "unknown method 'adapterx'"),
    (dict(tolerance=0.7), "--tolerance must be in"),
    (dict(share=0), "--share must be in"),
    (dict(pruner="median"), "unknown --pruner"),
    (dict(val_share=1.5), "--val-share must be in"),
    (dict(max_trials=0), "--trials must be at least 1"),
    (dict(name="../x"), "is not a folder name"),
    (dict(backbone="beit3-base"), "no pretrained weights for beit3-base"),
])
def test_bad_options_are_refused_with_a_clear_message(kw, message):
    with pytest.raises(ConfigError, match=message):
        ok(**kw).validate()


def test_a_base_config_may_not_set_what_the_tune_chooses(tmp_path):
    base = tmp_path / "base.toml"
    base.write_text('lr = 0.1\nwarmup_frac = 0.2\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="sets lr, which the tune chooses itself"):
        ok(base_config=str(base)).validate()
    base.write_text('warmup_frac = 0.2\npositives = "label"\n', encoding="utf-8")
    assert ok(base_config=str(base)).validate().fixed_values()["warmup_frac"] == 0.2


def test_data_without_a_val_split_or_not_prepared_is_refused(tmp_path):
    from tests.helpers.data_dir import make_report_data_dir

    data = make_report_data_dir(tmp_path)  # train and test splits only
    with pytest.raises(DataError, match="has no val split"):
        run_tune(ok(data_dir=str(data), out=str(tmp_path / "runs")))
    with pytest.raises(DataError, match="not a prepared data directory"):
        run_tune(ok(data_dir=str(tmp_path / "photos"), out=str(tmp_path / "runs")))
    assert not (tmp_path / "runs").exists()


def test_a_folder_that_is_not_a_tune_is_refused_untouched(train_data_dir, tmp_path):
    foreign = tmp_path / "runs" / "tune-mwa-beit3-mini"
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(ConfigError, match="is not an mwa tune folder"):
        run_tune(ok(data_dir=str(train_data_dir), out=str(tmp_path / "runs")))
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


def test_without_optuna_the_command_says_how_to_install_it(train_data_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    res = CliRunner().invoke(app, ["tune", str(train_data_dir), "--backbone", "beit3-mini", "--budget", "1m",
                                   "--out", str(tmp_path / "runs")])
    assert res.exit_code == 2
    text = " ".join(res.output.split())
    assert "mwa tune needs Optuna, which is not installed" in text and 'pip install "mwa-cli[tune]"' in text
    assert not (tmp_path / "runs").exists()


def test_the_cli_refuses_a_split_budget_and_shows_examples_in_its_help(tmp_path):
    res = CliRunner().invoke(app, ["tune", str(tmp_path), "--budget", "30", "minutes"])
    assert res.exit_code == 2 and "write --budget 30m" in " ".join(res.output.split())
    help_text = " ".join(CliRunner().invoke(app, ["tune", "--help"], env={"COLUMNS": "200"}).output.split())
    assert "mwa tune data --method mwa --compare full-ft --budget 1h" in help_text
    assert "recommended-<method>.toml" in help_text
