"""`mwa train`'s options are declared once: the command collects TrainConfig's values from its parsed parameters,
the help's defaults come from TrainConfig, and choices are checked by the option type."""

from __future__ import annotations

import dataclasses

import typer
from typer.testing import CliRunner

from mwa_cli.cli import app
from mwa_cli.commands.train import COMMAND_ONLY, RENAMED, config_values
from mwa_cli.train.config import TrainConfig

FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


def _train_command():
    return typer.main.get_command(app).commands["train"]


def _parsed(*args: str) -> dict:
    return config_values(_train_command().make_context("train", list(args)).params)


def test_every_parameter_is_a_config_field_renamed_or_the_commands_own():
    for param in _train_command().params:
        target = RENAMED[param.name][0] if param.name in RENAMED else param.name
        assert param.name in COMMAND_ONLY or target in FIELDS, f"--{param.name} reaches no TrainConfig field"


def test_given_values_reach_their_fields_and_the_rest_stays_unset():
    values = _parsed("data", "--warmup", "0.2", "--option", "rank=16", "--option", "layers=top-2", "--precision",
                     "bf16", "--flip", "off", "--no-compile", "--devices", "2", "--quiet")
    given = {k: v for k, v in values.items() if v is not None}
    assert given == {"data_dir": "data", "warmup_frac": 0.2, "method_options": {"rank": 16, "layers": "top-2"},
                     "precision": "bf16", "flip": "off", "compile": False}
    assert type(given["precision"]) is str  # plain text in config.json, not an Enum member
    assert set(values) <= FIELDS and "devices" not in values and "quiet" not in values


def test_a_value_outside_the_choices_is_refused_naming_them(tmp_path):
    res = CliRunner().invoke(app, ["train", str(tmp_path), "--feature-cache", "ssd"])
    assert res.exit_code == 2
    text = " ".join(res.output.replace("│", " ").split())  # the error box wraps its lines
    assert "'ssd' is not one of 'off', 'auto', 'gpu', 'ram', 'disk'" in text


def test_a_config_file_value_is_still_checked_by_the_config(tmp_path):
    config = tmp_path / "train.toml"
    config.write_text('precision = "fp8"\n', encoding="utf-8")
    res = CliRunner().invoke(app, ["train", str(tmp_path), "--config", str(config)])
    assert res.exit_code == 2 and "unknown precision 'fp8'" in res.output


def test_the_help_shows_the_configs_defaults():
    res = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "250"})
    text = " ".join(res.output.split())
    d = TrainConfig()
    for piece in (f"Warm-up share of the steps. [default: {d.warmup_frac:g}]", "Final learning rate. [default: 1e-6]",
                  f"Folder of runs. [default: {d.out}]", f"[default: {d.feature_cache}]"):
        assert piece in text, piece
