"""Every numeric option is finite and in its declared range (one table, mwa_cli/train/config.py RANGES, and the
method configs' ``ranges``), and a NaN or infinite weight or score is never published or evaluated as a result:
training stops with exit 7 and the cause (weights after a step, not the loss), `mwa eval` and `mwa search` refuse
an adapter or an index holding NaN even when its sha256 was recomputed to match."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from mwa_cli.cli import app
from mwa_cli.errors import EXIT_NONFINITE, EXIT_USAGE
from mwa_cli.fileio import sha256_file
from mwa_cli.train import config as config_mod
from mwa_cli.train.config import TrainConfig
from mwa_cli.train.loop import train
from tests.helpers.photos import make_photos

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def flat(res) -> str:
    return " ".join(res.output.split())


def _args(data, tok, out, *extra) -> list[str]:
    return ["train", str(data), "--backbone", "beit3-tiny-test", "--tokenizer", str(tok), "--out", str(out),
            "--name", "r", "--batch-size", "8", "--val-evals", "0", "--workers", "0", "--device", "cpu", "--quiet",
            *extra]


@pytest.mark.parametrize("option,value,message", [
    ("--weight-decay", "nan", "--weight-decay must be a number in [0, 10], not nan"),
    ("--lr", "inf", "--lr must be a number in (0, 10], not inf"),
    ("--min-lr", "-1", "--min-lr must be a number in [0, 10]"),
    ("--warmup", "2", "--warmup must be a number in [0, 1]"),
    ("--layer-decay", "nan", "--layer-decay must be"),
    ("--drop-path", "1", "--drop-path must be a number in [0, 1)"),
    ("--epochs", "nan", "--epochs must be"),
    ("--seed", "99999999999999999999", "--seed must be a whole number from 0 to 4294967295"),
    ("--seed", "-1", "--seed must be a whole number from 0 to 4294967295"),
    ("--workers", "-3", "--workers must be a whole number from 0 to 1024"),
    ("--checkpoint-every", "-1", "--checkpoint-every must be a whole number from 0"),
    ("--checkpoint-minutes", "-5", "--checkpoint-minutes must be a number in (0, 1000000]"),
    ("--val-share", "nan", "--val-share must be"),
    ("--log-every", "0", "--log-every must be a whole number from 1"),
    ("--budget", "9" * 400 + "h", "the budget must be positive and at most a year"),
    ("--option", "scale=NaN", "option scale of method mwa must be a finite number, not nan"),
    ("--option", "rank=100000000000000000000", "option rank of method mwa must be a whole number from 1 to 65536"),
])
def test_a_number_out_of_its_range_is_refused_before_anything_starts(option, value, message, train_data_dir,
                                                                     train_tokenizer, tmp_path):
    res = runner.invoke(app, _args(train_data_dir, train_tokenizer, tmp_path / "runs", "--steps", "1", option, value))
    assert res.exit_code == EXIT_USAGE, res.output
    assert message in flat(res) and "hint:" in res.output and "internal error" not in res.output
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("text,message", [("weight_decay = nan", "weight_decay in"),
                                          ("checkpoint_minutes = -5.0", "--checkpoint-minutes must be"),
                                          ("seed = 99999999999999999999", "seed in")])
def test_a_config_file_value_out_of_its_range(text, message, train_data_dir, train_tokenizer, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(text + "\n", encoding="utf-8")
    res = runner.invoke(app, _args(train_data_dir, train_tokenizer, tmp_path / "runs", "--config", str(cfg)))
    assert res.exit_code == EXIT_USAGE and message in flat(res), res.output


def test_prepare_seed_and_workers_are_checked(tmp_path):
    photos = make_photos(tmp_path / "photos", n=4)
    for option, value, message in (("--seed", "-1", "--seed must be a whole number from 0 to 4294967295"),
                                   ("--workers", "-3", "--workers must be a whole number from 0 to 1024")):
        res = runner.invoke(app, ["prepare", str(photos), "--out", str(tmp_path / "d"), option, value])
        assert res.exit_code == EXIT_USAGE and message in flat(res), res.output
    assert not (tmp_path / "d").exists()


def test_too_many_workers_are_capped_with_a_message(train_data_dir, train_tokenizer, tmp_path):
    args = [a for a in _args(train_data_dir, train_tokenizer, tmp_path / "runs", "--steps", "1") if a != "--quiet"]
    res = runner.invoke(app, args + ["--workers", "1000"], terminal_width=200)  # the last --workers counts
    assert res.exit_code == 0, res.output
    assert "--workers 1000: this machine has" in flat(res) and "data loader workers are used" in flat(res)


def test_weights_that_become_nan_with_a_finite_loss_stop_the_run_with_their_cause(train_data_dir, train_tokenizer,
                                                                                  tmp_path, monkeypatch):
    """--weight-decay nan as it ran before it was refused: AdamW's decoupled decay turns every weight NaN while
    the first loss is still finite. The run stops at its first check, names the option, publishes nothing."""
    monkeypatch.setattr(config_mod.Range, "contains", lambda self, v: True)  # let NaN through validation
    cfg = TrainConfig(data_dir=str(train_data_dir), backbone="beit3-tiny-test", tokenizer=str(train_tokenizer),
                      out=str(tmp_path), name="nan", steps=5, batch_size=8, lr=1e-3, seed=0, val_evals=2,
                      workers=0, weight_decay=float("nan"))
    result = train(cfg)
    assert result.exit_code == EXIT_NONFINITE and result.status == "nonfinite"
    assert "the weights became NaN or infinite by step 1, while the loss was still finite" in result.message
    assert "--weight-decay nan is not a finite number" in result.message and "lower --lr" not in result.message
    run = tmp_path / "nan"
    assert not (run / "adapter_model.safetensors").exists() and not (run / "eval.json").exists()
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r for r in rows if r["kind"] == "eval" and r["step"] > 0] == []  # never evaluated (RSUM "600")


def test_weights_that_overflow_name_the_optimizer_settings(train_data_dir, train_tokenizer, tmp_path, monkeypatch):
    from mwa_cli.train.trainer import Trainer

    step = Trainer.step

    def overflowing(self, batch):
        loss = step(self, batch)
        if self.step_count == 2:
            with torch.no_grad():
                next(p for p in self.model.parameters() if p.requires_grad).fill_(float("inf"))
        return loss

    monkeypatch.setattr(Trainer, "step", overflowing)
    cfg = TrainConfig(data_dir=str(train_data_dir), backbone="beit3-tiny-test", tokenizer=str(train_tokenizer),
                      out=str(tmp_path), name="inf", steps=6, batch_size=8, lr=1e-3, seed=0, val_evals=0,
                      workers=0, log_every=3, checkpoint_every=1)
    result = train(cfg)
    assert result.exit_code == EXIT_NONFINITE
    assert "the weights became NaN or infinite by step 2" in result.message
    assert "lower --lr (it was 0.001) or --weight-decay (it was 0.05)" in result.message
    assert "last good checkpoint (step 1)" in result.message


@pytest.fixture(scope="module")
def good_run(train_data_dir, train_tokenizer, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("nonfinite_runs")
    cfg = TrainConfig(data_dir=str(train_data_dir), backbone="beit3-tiny-test", tokenizer=str(train_tokenizer),
                      out=str(out), name="good", steps=4, batch_size=8, lr=1e-3, seed=0, val_evals=0, workers=0)
    assert train(cfg).exit_code == 0
    return out / "good"


def _poison(run: Path) -> None:
    """Every adapter tensor NaN, and the sha256 in adapter_config.json recomputed to match (a deliberate edit)."""
    path = run / "adapter_model.safetensors"
    state = {k: torch.full_like(v, float("nan")) for k, v in load_file(str(path)).items()}
    save_file(state, str(path))
    cfg = json.loads((run / "adapter_config.json").read_text())
    cfg["files"]["adapter_model.safetensors"] = sha256_file(path)
    (run / "adapter_config.json").write_text(json.dumps(cfg))
    (run / ".mwa-verified.json").unlink(missing_ok=True)


def test_an_all_nan_adapter_is_never_evaluated_or_indexed(good_run, tmp_path):
    run = tmp_path / "nan"
    shutil.copytree(good_run, run, ignore=shutil.ignore_patterns(".lock"))
    _poison(run)
    before = (run / "eval.json").read_text()
    res = runner.invoke(app, ["eval", str(run), "--device", "cpu"])
    assert res.exit_code == EXIT_NONFINITE, res.output
    assert "holds NaN or infinity" in flat(res) and "100" not in flat(res).split("error:")[0]
    assert (run / "eval.json").read_text() == before  # not replaced by a "perfect" score
    res = runner.invoke(app, ["index", str(make_photos(tmp_path / "photos", n=3)), "--adapter", str(run), "--out",
                              str(tmp_path / "idx"), "--device", "cpu"])
    assert res.exit_code == EXIT_NONFINITE and not (tmp_path / "idx").exists(), res.output


def test_an_index_holding_nan_embeddings_is_refused_by_search(good_run, tmp_path):
    photos = make_photos(tmp_path / "photos", n=4)
    idx = tmp_path / "idx"
    assert runner.invoke(app, ["index", str(photos), "--adapter", str(good_run), "--out", str(idx), "--device",
                               "cpu"]).exit_code == 0
    emb = idx / "embeddings.safetensors"
    tensors = load_file(str(emb))
    tensors["images"][1] = float("nan")
    save_file(tensors, str(emb), metadata={"generation": json.loads((idx / "index.json").read_text())["generation"]})
    meta = json.loads((idx / "index.json").read_text())
    meta["files"]["embeddings.safetensors"] = sha256_file(emb)
    (idx / "index.json").write_text(json.dumps(meta))
    (idx / ".mwa-verified.json").unlink(missing_ok=True)
    res = runner.invoke(app, ["search", "a red mark", "--index", str(idx)])
    assert res.exit_code == EXIT_NONFINITE, res.output
    assert "holds NaN or infinity" in flat(res) and "score" not in res.output and "--rebuild" in flat(res)


def test_a_report_refuses_nan_and_implausible_metrics(good_run, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(good_run, runs / "good", ignore=shutil.ignore_patterns(".lock"))
    for name, edit in (("nan", lambda t: t.replace('"rsum": ', '"rsum": NaN, "was": ', 1)),
                       ("hours", lambda t: t)):
        shutil.copytree(good_run, runs / name, ignore=shutil.ignore_patterns(".lock"))
        (runs / name / "eval.json").write_text(edit((runs / name / "eval.json").read_text()))
    timing = json.loads((runs / "hours" / "timing.json").read_text())
    timing["device_hours"] = 1e300
    (runs / "hours" / "timing.json").write_text(json.dumps(timing))
    res = runner.invoke(app, ["report", "--runs", str(runs), "--out", str(tmp_path / "r.html")], terminal_width=200)
    assert res.exit_code == 0, res.output
    out = "".join(res.output.split())  # the reasons follow long paths, which may wrap anywhere
    assert "nan:eval.json" in out and "holdsNaN" in out  # skipped, each with its reason
    assert "hours:timing.jsonisnotwhatmwawrites:device_hoursis1e+300" in out
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "325,318" not in html  # no verdict priced from it
    assert html.count("1e+300") == html.count("device_hours is 1e+300") == 1  # only in the reason it was skipped
