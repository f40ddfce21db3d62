"""`mwa settings`: defaults for the report kept in the user's config folder, checked, and overridden by options."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mwa_cli.cli import app
from mwa_cli.settings import settings_path
from tests.helpers.report_builder import standard_runs

runner = CliRunner()


@pytest.fixture
def config_home(tmp_path, monkeypatch):
    home = tmp_path / "config"
    monkeypatch.setenv("MWA_CONFIG_HOME", str(home))
    return home


def mwa(*args):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "100"})


def shown(res) -> dict:
    return {r["key"]: (r["value"], r["source"]) for r in json.loads(res.stdout)["settings"]}


def test_show_set_unset_and_path(config_home):
    res = mwa("settings", "--json")
    assert res.exit_code == 0, res.output
    assert shown(res)["gpu-cost"] == (2.5, "default") and not (config_home / "settings.toml").exists()
    for key, value in (("gpu-cost", "0.9"), ("currency", "EUR"), ("lines", "3"), ("retrains_per_year", "4"),
                       ("--lang", "ja")):  # keys spelled like the options, with or without the dashes
        res = mwa("settings", "set", key, value)
        assert res.exit_code == 0, res.output
    assert shown(mwa("settings", "show", "--json")) == {
        "gpu-cost": (0.9, "settings"), "currency": ("EUR", "settings"), "lines": (3, "settings"),
        "retrains-per-year": (4, "settings"), "lang": ("ja", "settings")}
    res = mwa("settings")
    assert res.exit_code == 0 and "gpu-cost" in res.output and "settings" in res.output
    assert mwa("settings", "path").stdout.strip() == str(config_home / "settings.toml") == str(settings_path())
    assert mwa("settings", "unset", "gpu-cost").exit_code == 0
    assert shown(mwa("settings", "--json"))["gpu-cost"] == (2.5, "default")
    res = mwa("settings", "unset", "gpu-cost")
    assert res.exit_code == 0 and "was not set" in res.output


def test_xdg_config_home_is_the_default_place(tmp_path, monkeypatch):
    monkeypatch.delenv("MWA_CONFIG_HOME")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert settings_path() == tmp_path / "xdg" / "mwa" / "settings.toml"


@pytest.mark.parametrize("key,value,message", [
    ("gpu-cost", "nan", "must be between 0 and 1e+06"), ("gpu-cost", "inf", "must be between 0 and 1e+06"),
    ("gpu-cost", "-1", "must be between 0 and 1e+06"), ("gpu-cost", "cheap", "is not a value it takes"),
    ("lines", "0", "must be between 1 and 1e+06"), ("lines", "1.5", "is not a value it takes"),
    ("retrains-per-year", "-2", "must be between 0 and 10000"), ("lang", "fr", "must be one of en, ja"),
    ("currency", " ", "1 to 16 printable characters"), ("price", "3", "unknown setting 'price'"),
])
def test_a_bad_value_is_refused_and_nothing_else_is_lost(config_home, key, value, message):
    assert mwa("settings", "set", "currency", "EUR").exit_code == 0
    before = (config_home / "settings.toml").read_text()
    res = mwa("settings", "set", key, value)
    assert res.exit_code == 2 and message in " ".join(res.output.split()) and "Traceback" not in res.output
    assert (config_home / "settings.toml").read_text() == before


def test_a_file_edited_by_hand_is_checked_where_it_is_read(config_home, tmp_path):
    _, runs = standard_runs(tmp_path)
    config_home.mkdir()
    (config_home / "settings.toml").write_text('gpu-cost = inf\n')
    res = mwa("report", "--runs", runs, "--json")
    assert res.exit_code == 2 and "setting gpu-cost must be between 0 and 1e+06" in res.output
    assert str(config_home / "settings.toml") in " ".join(res.output.split())
    (config_home / "settings.toml").write_text('colour = "red"\n')
    res = mwa("settings")
    assert res.exit_code == 2 and "unknown setting 'colour'" in res.output and "mwa settings unset colour" in res.output
    assert mwa("settings", "unset", "colour").exit_code == 0  # the way out works on the bad file
    (config_home / "settings.toml").write_text('gpu-cost = [')
    res = mwa("settings")
    assert res.exit_code == 2 and "cannot read your settings file" in res.output


def test_the_report_uses_the_settings_and_an_option_wins(config_home, tmp_path):
    _, runs = standard_runs(tmp_path)
    for key, value in (("gpu-cost", "3"), ("currency", "EUR"), ("lines", "2"), ("retrains-per-year", "5")):
        assert mwa("settings", "set", key, value).exit_code == 0
    rep = json.loads(mwa("report", "--runs", runs, "--json").stdout)
    assert {k: rep["assumptions"][k] for k in ("gpu_cost_per_hour", "currency", "lines", "retrains_per_year")} == {
        "gpu_cost_per_hour": 3.0, "currency": "EUR", "lines": 2, "retrains_per_year": 5}
    rep = json.loads(mwa("report", "--runs", runs, "--json", "--gpu-cost", "1", "--currency", "JPY").stdout)
    assert rep["assumptions"]["gpu_cost_per_hour"] == 1.0 and rep["assumptions"]["currency"] == "JPY"
    assert rep["assumptions"]["lines"] == 2
    res = mwa("report", "--runs", runs, "--json", "--gpu-cost", "inf")
    assert res.exit_code == 2 and "--gpu-cost must be between 0 and 1e+06" in res.output


def test_the_demo_report_takes_them_too(config_home):
    from mwa_cli.settings import report_settings, set_setting

    set_setting("gpu-cost", "0.5")
    set_setting("lang", "ja")
    got = report_settings()
    assert got["assumptions"].gpu_cost_per_hour == 0.5 and got["lang"] == "ja"
