"""The rows of docs/parameters.md: counts taken from the model the method was applied to, one markdown line each."""

from __future__ import annotations

import torch

from mwa_cli.adapters.parameters_doc import markdown_row, parameter_row
from mwa_cli.models.presets import build_backbone


def _tiny():
    torch.manual_seed(0)
    return build_backbone("beit3-tiny-test")[0]


def test_a_row_counts_the_backbone_before_the_method_and_what_it_added():
    model = _tiny()
    backbone = sum(p.numel() for p in model.parameters())
    row = parameter_row(model, "mwa", {"layers": "top-1"})
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert row["method"] == "mwa" and row["backbone"] == backbone
    assert row["added"] > 0 and row["total"] == backbone + row["added"] == sum(p.numel() for p in model.parameters())
    assert row["trainable"] == trainable
    assert set(row["options"]) == {"rank", "ae_width", "layers"} and row["options"]["layers"] == "top-1"

    full = parameter_row(_tiny(), "full-ft")
    assert full["added"] == 0 and full["options"] == {} and full["trainable"] == full["total"] == backbone


def test_a_markdown_row_gives_counts_with_separators_and_percentages():
    row = {"method": "mwa", "options": {"rank": 64}, "backbone": 1_000_000, "added": 29_400, "trainable": 29_401,
           "total": 1_029_400}
    assert markdown_row("beit3-base", row) == (
        "| beit3-base | mwa | {'rank': 64} | 1,000,000 | 29,400 | 2.94 | 29,401 | 2.86 |")
    assert markdown_row("b", dict(row, options={})).startswith("| b | mwa |  | 1,000,000 |")
