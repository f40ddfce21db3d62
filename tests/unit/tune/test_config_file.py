"""The recommended configuration is a TOML file that `mwa train --config` reads back exactly."""

from __future__ import annotations

import tomllib

import pytest
import typer

from mwa_cli.cli import app
from mwa_cli.commands.train import config_values
from mwa_cli.errors import ConfigError
from mwa_cli.train.config import load_config_file, resolve_config
from mwa_cli.tune.config_file import to_toml, train_command, train_values, write_config


def test_values_round_trip_through_toml_with_hostile_strings():
    values = {"data_dir": 'C:\\photos "line 3"', "caption_note": "傷 😀 \x7f\x01\ttab", "lr": 1e-05,
              "batch_size": 32, "compile": True, "targets": ["q_proj", "v_proj"],
              "method_options": {"layers": "top-2", "rank": 8, "odd key": 0.5}}
    text = to_toml(values, ["first line", "a comment\nthat had a newline"])
    assert tomllib.loads(text) == values
    assert text.startswith("# first line\n# a comment that had a newline\n")


def test_non_finite_numbers_are_refused():
    with pytest.raises(ValueError):
        to_toml({"lr": float("nan")})


def test_mwa_train_config_reads_the_recommended_file(tmp_path):
    fixed = {"backbone": "beit3-mini", "device": "cpu", "compile": False}
    chosen = {"method": "mwa", "method_options": {"layers": "top-3", "rank": "auto", "ae_width": 48},
              "lr": 0.0123, "batch_size": 16, "feature_cache": "auto"}
    values = train_values(fixed, chosen, {"budget_s": 150.0}, 0.1, str(tmp_path / "data"), tmp_path / "tune")
    path = write_config(tmp_path / "recommended-mwa.toml", values, ["from a test"])
    assert load_config_file(path) == values
    # as `mwa train DATA --config FILE` parses it: the file's values, the positional data dir over the file's
    params = typer.main.get_command(app).commands["train"].make_context(
        "train", ["other_data", "--config", str(path)]).params
    cfg = resolve_config(config_values(params), params["config"])
    assert cfg.data_dir == "other_data" and cfg.method == "mwa" and cfg.lr == 0.0123 and cfg.batch_size == 16
    assert cfg.method_options == chosen["method_options"] and cfg.feature_cache == "auto"
    assert cfg.budget == "150s" and cfg.val_share == 0.1 and cfg.tune == str((tmp_path / "tune").resolve())
    assert cfg.final_split == "test" and cfg.seed == 0  # the trials' val-only evaluation and seed stay behind
    assert "device" in values and "compile" not in values  # defaults are left out
    assert train_command("data dir", path) == f"mwa train 'data dir' --config {path}"


def test_a_steps_trial_length_becomes_steps():
    values = train_values({}, {"method": "full-ft", "lr": 3e-3}, {"steps": 40}, 0.1, "data", "t")
    assert values["steps"] == 40 and "budget" not in values


def test_a_hand_edited_file_is_still_checked(tmp_path):
    path = tmp_path / "recommended-mwa.toml"
    path.write_text(to_toml({"method": "mwa", "lr": "fast"}), encoding="utf-8")
    with pytest.raises(ConfigError, match="lr in .* must be float or null"):
        load_config_file(path)
