"""Adding a method touches its module and its test, nothing else: a one-parameter-per-layer method declared and
registered here trains through `mwa train`'s own function on the tiny backbone and the bundled sample photos,
and the command line (help, option validation, eval), config.json, the adapter artefact and the report all
handle it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import Tensor, nn
from typer.testing import CliRunner

from mwa_cli.adapters import registry
from mwa_cli.adapters.io import load_adapter
from mwa_cli.adapters.methods.base import AdapterMethod, LayerSpec, MethodConfig
from mwa_cli.data.prepare import prepare_dataset
from mwa_cli.train.config import resolve_config
from mwa_cli.train.loop import train
from tests.helpers.paths import REPO

NAME = "layer-gate"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------- the whole method
@dataclass
class LayerGateConfig(MethodConfig):
    layers: LayerSpec = "all"
    init: float = 0.0
    train_heads: bool = False
    train_logit_scale: bool = True


class Gate(nn.Module):
    """One parameter per layer: the layer's output times ``1 + g`` (``g = 0``: the backbone unchanged)."""

    def __init__(self, init: float):
        super().__init__()
        self.g = nn.Parameter(torch.tensor(float(init)))

    def forward(self, h: Tensor, out: Tensor, split: int, drop_path: nn.Module) -> Tensor:
        return out * (1 + self.g)


class LayerGate(AdapterMethod):
    name = NAME
    display_name = "Layer gate"
    Config = LayerGateConfig
    learning_rates = {"default": 5e-2}
    order = 50

    def inject_beit3(self, model, config: LayerGateConfig) -> None:
        for i in config.layers:
            model.layers[i].add_module("mwa", Gate(config.init).to(model.logit_scale.device))


def register_layer_gate() -> None:
    registry.register(LayerGate())


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def layer_gate():
    register_layer_gate()
    yield NAME
    registry.unregister(NAME)


@pytest.fixture(scope="module")
def sample_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sample") / "data"
    prepare_dataset(REPO / "mwa_cli" / "sample_data", out, image_size=32, progress=False, workers=1)
    return out


@pytest.fixture(scope="module")
def gate_run(layer_gate, sample_data, tmp_path_factory):
    cfg = resolve_config(dict(data_dir=str(sample_data), method=layer_gate, method_options={"layers": "top-1"},
                              backbone="beit3-tiny-test", steps=4, batch_size=16, val_evals=0, workers=0,
                              device="cpu", extend_vocab="off", drop_path=0.0, log_every=1,
                              out=str(tmp_path_factory.mktemp("runs")), name="gate"))
    result = train(cfg)
    assert result.status == "completed", result.message
    return result.run_dir


# ----------------------------------------------------------------------------- tests
def test_it_trains_and_its_run_records_it(gate_run):
    config = json.loads((gate_run / "config.json").read_text())
    assert config["method"] == NAME
    assert config["method_options"] == {"layers": [1], "init": 0.0, "train_heads": False, "train_logit_scale": True}
    assert config["lr"] == 5e-2 and "lr" in config["auto_resolved"]  # the method module's rate
    adapter = json.loads((gate_run / "adapter_config.json").read_text())
    assert adapter["method"] == NAME and adapter["options"] == config["method_options"]
    weights = load_file(str(gate_run / "adapter_model.safetensors"))
    assert set(weights) == {"beit3.encoder.layers.1.mwa.g", "logit_scale"}
    assert weights["beit3.encoder.layers.1.mwa.g"].item() != 0.0  # it trained
    assert json.loads((gate_run / "eval.json").read_text())["method"] == NAME


def test_its_adapter_loads_bit_exactly(gate_run):
    model, applied, _ = load_adapter(gate_run)
    saved = load_file(str(gate_run / "adapter_model.safetensors"))
    params = dict(applied.trainable_named_parameters())
    assert params.keys() == saved.keys() and all(torch.equal(params[k], saved[k]) for k in saved)
    assert applied.name == NAME and applied.layers == [1] and applied.trainable_params() == 2


def test_mwa_eval_reproduces_its_training_eval(gate_run):
    from mwa_cli.cli import app  # imported by the tests, not the module: see test_the_help_lists_it

    res = CliRunner().invoke(app, ["eval", str(gate_run), "--json", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["rsum"] == pytest.approx(json.loads((gate_run / "eval.json").read_text())["rsum"])


def test_the_report_names_it(layer_gate):
    from mwa_cli.report.build import display_name

    assert display_name({"method": layer_gate, "name": "gate"}) == "Layer gate · gate"


@pytest.mark.parametrize("extra", [[], ["--devices", "2", "--device", "cpu"]])
def test_an_option_typo_is_refused_before_any_model_or_process(layer_gate, sample_data, tmp_path, monkeypatch, extra):
    from mwa_cli.cli import app

    def no_model(*_args, **_kwargs):
        raise AssertionError("a model was built or a process started")

    monkeypatch.setattr("mwa_cli.models.presets.build_backbone", no_model)
    monkeypatch.setattr("mwa_cli.train.launcher.launch", no_model)
    res = CliRunner().invoke(app, ["train", str(sample_data), "--method", layer_gate, "--backbone", "beit3-tiny-test",
                                   "--option", "iinit=0.5", "--out", str(tmp_path / "runs"), *extra])
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert f"unknown options for method {NAME}: iinit" in text
    assert "accepted: init, layers, train_heads, train_logit_scale" in text
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow  # a real subprocess or several commands: seconds
def test_the_help_lists_it():
    """In a fresh process: the help is written when the command line is imported, after the registration."""
    script = ("from tests.unit.adapters import test_plugin\n"
              "test_plugin.register_layer_gate()\n"
              "from mwa_cli.cli import app\n"
              "app(['train', '--help'], prog_name='mwa')\n")
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="200", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"mwa | nke | lora | full-ft | frozen | {NAME}. [default: mwa]" in out.stdout
