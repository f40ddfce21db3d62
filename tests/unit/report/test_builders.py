"""The fake data and run dirs of tests/helpers follow docs/formats.md."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from tests.helpers.report_builder import standard_runs


def test_builder_follows_formats(tmp_path):
    data, runs = standard_runs(tmp_path)
    m = pd.read_csv(data / "manifest.csv", dtype=str, keep_default_na=False)
    assert list(m.columns) == ["image_id", "path", "caption", "label", "split", "width", "height"]
    meta = json.loads((data / "cache" / "images_8.json").read_text())
    arr = np.memmap(data / "cache" / "images_8.u8", dtype=np.uint8, mode="r", shape=(meta["count"], 8, 8, 3))
    assert arr.shape[0] == len(meta["ids"]) == m.image_id.nunique()
    for name in ("config.json", "metrics.jsonl", "timing.json", "eval.json", "eval_topk.json",
                 "adapter_model.safetensors", "adapter_config.json"):
        assert (runs / "mwa" / name).is_file()
