"""`mwa train --compile/--no-compile` and `--compile-mode`: compiled on CUDA and eager on the CPU by default, the
mode per method from one table; a real compiled run (torch.compile with the aot_eager backend on the CPU)."""

from __future__ import annotations

import functools
import json

import pytest
import torch
from torch._dynamo.utils import counters
from typer.testing import CliRunner

from mwa_cli.cli import app
from mwa_cli.errors import ConfigError
from mwa_cli.train import compile_policy
from mwa_cli.train.compile_policy import AUTO_MODES, COMPILE_MODES, compile_setting, describe, step_graph_setting
from mwa_cli.train.config import TrainConfig
from mwa_cli.train.trainer import Trainer, at_text_width, build_trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("method", ["full-ft", "mwa", "nke", "lora", "frozen"])
def test_by_default_cuda_compiles_every_method_and_the_cpu_stays_eager(method):
    assert AUTO_MODES[method] in COMPILE_MODES and AUTO_MODES[method] != "auto"
    assert compile_setting(None, "auto", method, "cuda") in (True, "reduce-overhead")
    assert compile_setting(None, "auto", method, "cpu") is False
    assert step_graph_setting(None, "auto", method, "cpu") is False
    assert step_graph_setting(None, "auto", method, "cuda") is (AUTO_MODES[method] == "graph")


def test_explicit_choices_win_over_the_defaults():
    assert compile_setting(False, "auto", "mwa", "cuda") is False  # --no-compile
    assert compile_setting(True, "auto", "mwa", "cpu") is True  # --compile on the CPU
    assert compile_setting(None, "reduce-overhead", "mwa", "cuda") == "reduce-overhead"
    assert compile_setting(True, "default", "mwa", "cuda") is True
    assert compile_setting(None, "auto", "a-new-method", "cuda") is True  # not in the table: plain


def test_the_table_alone_decides_a_methods_auto_mode(monkeypatch):
    monkeypatch.setitem(compile_policy.AUTO_MODES, "nke", "reduce-overhead")
    assert compile_setting(None, "auto", "nke", "cuda") == "reduce-overhead"
    assert compile_setting(None, "auto", "mwa", "cuda") is True
    assert compile_setting(None, "default", "nke", "cuda") is True
    assert [describe(s) for s in (False, True, "reduce-overhead")] == ["eager", "compiled",
                                                                       "compiled (reduce-overhead)"]


def test_a_budget_too_short_to_win_the_compilation_back_trains_eager_unless_compile_is_asked_for():
    large = compile_policy.expected_compile_s("beit3-large") * compile_policy.COMPILE_PAYBACK
    assert compile_setting(None, "auto", "full-ft", "cuda", 75.0, "beit3-large") is False
    assert step_graph_setting(None, "auto", "full-ft", "cuda", 75.0, "beit3-large") is False
    assert compile_setting(None, "auto", "full-ft", "cuda", large, "beit3-large") is True  # at the bound: compiled
    assert step_graph_setting(None, "auto", "mwa", "cuda", large, "beit3-large") is True
    assert compile_setting(None, "auto", "mwa", "cuda", None, "beit3-large") is True  # no budget
    assert compile_setting(True, "auto", "mwa", "cuda", 10.0, "beit3-large") is True  # --compile
    # a smaller backbone compiles faster, so a shorter budget already pays for it
    mini = compile_policy.expected_compile_s("beit3-mini") * compile_policy.COMPILE_PAYBACK
    assert mini < large and compile_setting(None, "auto", "mwa", "cuda", mini, "beit3-mini") is True
    assert compile_setting(None, "auto", "mwa", "cuda", mini, "an-unknown-backbone") is False  # the longest
    assert "75 s" in compile_policy.short_budget_note(75.0, "beit3-large")
    assert compile_policy.budget_too_short(None, "cpu", 5.0, "beit3-large") is False  # the CPU is eager anyway


def test_graph_mode_compiles_plainly_and_captures_the_step_on_cuda_only():
    assert compile_setting(None, "graph", "mwa", "cuda") is True
    assert step_graph_setting(None, "graph", "mwa", "cuda") is True
    assert step_graph_setting(False, "graph", "mwa", "cuda") is False  # --no-compile: eager, no graph
    assert step_graph_setting(True, "graph", "mwa", "cpu") is False  # CUDA graphs need CUDA
    assert step_graph_setting(None, "reduce-overhead", "mwa", "cuda") is False
    assert describe(True, step_graph=True) == "compiled + step graph"
    trainer = build_trainer("beit3-tiny-test", "mwa", device="cpu", precision="fp32", cuda_graph=True)
    assert trainer.step_graph_record() is None  # asked for on the CPU: no graphs, eager steps


def test_an_unknown_mode_is_refused_naming_the_choices(tmp_path):
    with pytest.raises(ConfigError, match="unknown --compile-mode 'fast'") as exc:
        TrainConfig(data_dir="x", compile_mode="fast").validate()
    assert "auto, default, reduce-overhead, graph" in exc.value.hint
    res = CliRunner().invoke(app, ["train", str(tmp_path), "--compile-mode", "fast"])
    assert res.exit_code == 2 and "'fast' is not one of" in " ".join(res.output.split())


def test_a_run_started_before_the_option_existed_keeps_its_choice():
    from mwa_cli.train.config import config_from_run

    assert config_from_run({"data_dir": "d", "compile": False}).compile is False
    assert config_from_run({"data_dir": "d"}).compile is None


def test_text_width_warm_up_batches_pad_or_cut_the_captions():
    ids = torch.tensor([[0, 5, 6, 2, 1, 1, 1, 1]])
    mask = (ids == 1).long()
    wide = at_text_width({"input_ids": ids, "padding_mask": mask}, 16)
    assert wide["input_ids"].shape == (1, 16) and wide["input_ids"][0, 8:].eq(1).all()
    assert wide["padding_mask"][0, 8:].eq(1).all()
    hidden = at_text_width({"text_hidden": torch.ones(1, 8, 4), "padding_mask": mask}, 16)["text_hidden"]
    assert hidden.shape == (1, 16, 4) and hidden[0, 8:].eq(0).all()
    assert at_text_width({"input_ids": ids, "padding_mask": mask}, 4)["input_ids"].shape == (1, 4)


def test_warm_compile_leaves_weights_optimizer_and_random_state_unchanged():
    trainer = build_trainer("beit3-tiny-test", "mwa", device="cpu", precision="fp32", drop_path=0.1)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    torch.manual_seed(3)
    rng = torch.get_rng_state()
    batch = trainer.random_batch(4, text_len=16)
    seconds = trainer.warm_compile(batch, [24], eval_batch=4)
    assert seconds > 0 and torch.equal(torch.get_rng_state(), rng) and trainer.model.training
    assert all(p.grad is None for p in trainer.model.parameters())
    assert not trainer.optimizer.state and trainer.step_count == 0
    assert all(torch.equal(p, before[n]) for n, p in trainer.model.named_parameters())


@pytest.mark.slow
def test_a_compiled_run_compiles_before_training_and_evaluates_between_steps(train_data_dir, train_tokenizer,
                                                                             tmp_path, monkeypatch):
    """`mwa train --compile` on the CPU (aot_eager backend: no C++ compiler needed), captions in two bucket widths
    (40 and 32 tokens), validation checks between the steps and the final evaluation: the layers compile once,
    before the first step, and no training step compiles anything."""
    from mwa_cli.train.loop import train

    torch._dynamo.reset()
    counters.clear()
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    compiled_in_step = []
    step = Trainer.step

    def counted_step(self, batch):
        before = counters["stats"]["unique_graphs"]
        loss = step(self, batch)
        compiled_in_step.append((int(batch["padding_mask"].shape[1]), counters["stats"]["unique_graphs"] - before))
        return loss

    monkeypatch.setattr(Trainer, "step", counted_step)
    said = []
    cfg = TrainConfig(data_dir=str(train_data_dir), backbone="beit3-tiny-test", tokenizer=str(train_tokenizer),
                      out=str(tmp_path), name="compiled", method="mwa", steps=8, batch_size=4, lr=1e-3, seed=0,
                      log_every=2, val_evals=2, workers=0, text_len=48, compile=True)
    res = train(cfg, progress=lambda ev, d: said.append(d.get("text", "")) if ev == "message" else None)
    assert res.status == "completed" and res.steps == 8
    assert {w for w, _ in compiled_in_step} == {32, 40}, compiled_in_step  # both widths trained
    assert all(n == 0 for _, n in compiled_in_step), compiled_in_step
    notes = [t for t in said if t.startswith("compiling the layers")]
    assert len(notes) == 1 and "paid once per run" in notes[0]
    timing = json.loads((res.run_dir / "timing.json").read_text())
    assert timing["layers"] == "compiled" and timing["compile_s"] > 0 and timing["step_graph"] is None
    rows = [json.loads(x) for x in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "eval"] == [0, 3, 5, 8]  # step 0, 2 checks between steps, last
    assert res.eval is not None and res.eval["rsum"] >= 0
    torch._dynamo.reset()
