"""`mwa train`'s parsed command line as a request (`request_from_params`) and its plan of runs (`plan_runs`):
--resume keeps only the run to continue and lists what it ignores, --seeds plans one run per seed."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from mwa_cli.cli import app
from mwa_cli.commands.train import config_values, plan_runs, request_from_params
from mwa_cli.errors import ConfigError


def _params(*args: str) -> dict:
    return typer.main.get_command(app).commands["train"].make_context("train", list(args)).params


def test_a_new_run_keeps_every_given_option(tmp_path):
    config = tmp_path / "train.toml"
    params = _params("data", "--lr", "0.01", "--device", "cpu", "--devices", "2", "--config", str(config), "-q")
    request = request_from_params(params)
    assert request.options == config_values(params) and request.options["lr"] == 0.01
    assert request.config_file == config and request.devices == "2" and request.quiet and not request.json_out
    assert request.device == "cpu" and type(request.device) is str
    assert request.ignored == () and request.resume is None and plan_runs(request) == [request.options]


def test_resume_keeps_only_the_run_and_lists_what_it_ignores(tmp_path):
    config = tmp_path / "train.toml"
    request = request_from_params(_params("--resume", "runs/r1", "--out", "elsewhere", "--lr", "0.01",
                                          "--method", "lora", "--device", "cpu", "--config", str(config)))
    assert request.options == {"resume": "runs/r1", "out": "elsewhere"} and request.resume == "runs/r1"
    assert request.config_file is None and request.device == "cpu"
    assert request.ignored == ("device", "lr", "method", "config")


def test_the_resume_note_names_the_ignored_options_unless_quiet(tmp_path):
    args = ["train", "--resume", str(tmp_path / "no-such-run"), "--lr", "0.01", "--epochs", "2"]
    loud, quiet = CliRunner().invoke(app, args), CliRunner().invoke(app, [*args, "--quiet"])
    note = "--resume continues the run with its own config.json; ignored: epochs, lr"
    assert note in " ".join(loud.output.split()) and "ignored" not in quiet.output
    assert loud.exit_code == quiet.exit_code != 0  # the missing run is still refused


def test_seeds_plan_one_run_per_seed_named_after_it():
    request = request_from_params(_params("data", "--seeds", "3", "--seed", "5", "--name", "mwa-2h",
                                          "--backbone", "beit3-mini"))
    plan = plan_runs(request)
    assert [(run["seed"], run["name"]) for run in plan] == [(5, "mwa-2h-s5"), (6, "mwa-2h-s6"), (7, "mwa-2h-s7")]
    assert all(dict(run, seed=None, name=None) == dict(request.options, seed=None, name=None) for run in plan)


@pytest.mark.parametrize("extra, message", [(["--seeds", "0"], "--seeds must be at least 1"),
                                            (["--seeds", "2", "--devices", "2"], "cannot be combined with --devices"),
                                            (["--seeds", "2", "--resume", "r"], "cannot be combined with --resume")])
def test_impossible_seed_plans_are_refused(extra, message):
    with pytest.raises(ConfigError, match=message):
        plan_runs(request_from_params(_params("data", *extra)))
