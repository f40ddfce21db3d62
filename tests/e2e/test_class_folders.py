"""Class-folder data end to end on the tiny backbone: `mwa prepare --format folders` (label descriptions,
warnings for code-like folder names), training with multi-positive targets (no collapse: every label above
chance), the label-level protocol in eval.json, and unchanged training on data whose captions are unique."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from mwa_cli.adapters.registry import recommended_lr
from mwa_cli.data.label_text import load_label_map, needs_description, parse_label_text_items
from mwa_cli.data.prepare import prepare_dataset
from mwa_cli.errors import ConfigError
from mwa_cli.train.config import TEMPLATED_DEFAULT_EPOCHS, TrainConfig
from mwa_cli.train.loop import train
from scripts.make_class_folders import build_class_folders
from tests.helpers.paths import REPO

COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


def _make_class_folders(root: Path, per_label: int = 12, size: int = 32, seed: int = 0) -> Path:
    """photos/<colour>/*.png: noisy squares of the folder's colour."""
    rng = np.random.default_rng(seed)
    for label, rgb in COLORS.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for k in range(per_label):
            img = rng.integers(0, 50, (size, size, 3)).astype(np.int16) + np.array(rgb, dtype=np.int16) // 2
            x0, y0 = rng.integers(0, size // 2, 2)
            img[y0:y0 + size // 2, x0:x0 + size // 2] = rgb
            Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(root / label / f"{label}_{k:02d}.png")
    return root


@pytest.fixture(scope="module")
def folder_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("class_folders")
    photos = _make_class_folders(root / "photos")
    prepare_dataset(photos, root / "data", fmt="folders", lang="en", split="0.5,0.25,0.25", image_size=32,
                    progress=False, workers=1)
    return root / "data"


def _cfg(data_dir, tok, out, name, **kw) -> TrainConfig:
    base = dict(data_dir=str(data_dir), backbone="beit3-tiny-test", tokenizer=str(tok), out=str(out), name=name,
                method="mwa", batch_size=16, lr=5e-3, seed=0, log_every=5, val_evals=0, workers=0, drop_path=0.0)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.slow
def test_class_folders_train_without_collapse(folder_data, train_tokenizer, tmp_path):
    # the product's defaults: learning rate, batch size, drop path, positives
    res = train(_cfg(folder_data, train_tokenizer, tmp_path, "mwa-folders", steps=60, lr=None, batch_size=None,
                     drop_path=TrainConfig.drop_path))
    assert res.exit_code == 0, res.message
    cfg = json.loads((res.run_dir / "config.json").read_text())
    assert cfg["positives"] == "caption" and cfg["positives_detail"]["requested"] == "auto"
    assert cfg["positives_detail"]["distinct_captions"] == 12  # 4 labels x 3 English templates
    ev = json.loads((res.run_dir / "eval.json").read_text())
    assert ev["primary_protocol"] == "label_level" and ev["instance_protocol"]
    ll = ev["label_level"]
    assert ll["key"] == "caption" and set(ll["per_label"]) == set(COLORS)
    for label, m in ll["per_label"].items():  # every label above chance, not one label for every photo
        assert m["i2t"]["r1"] > m["chance"]["i2t_r1"], (label, m["i2t"]["r1"])
    assert ll["i2t"]["r1"] >= 2 * ll["chance"]["i2t_r1"], ll["i2t"]
    env = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    shown = subprocess.run([sys.executable, "-m", "mwa_cli", "eval", str(res.run_dir), "--device", "cpu",
                            "--tokenizer", str(train_tokenizer)], capture_output=True, text=True, env=env,
                           timeout=120, cwd=str(tmp_path))
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "label level (identical captions) (primary: captions repeat in this split)" in shown.stdout
    assert "red: i2t R@1" in shown.stdout and "chance 25.0" in shown.stdout


@pytest.mark.slow
def test_beit3_mini_at_its_defaults_does_not_collapse_on_class_folders(tmp_path):
    """`mwa train DATA --method mwa` on class folders, every option at its default (beit3-mini, the length and rate
    for templated captions: 40 epochs and 5e-3, batch 32): every label above chance. At the rate tuned on varied captions (2e-2) the
    same run finds no photo of two of the four labels (measured: missing_part 0 %, scratch 0 %)."""
    labels = ("hole", "missing_part", "rust", "scratch")
    build_class_folders(tmp_path / "photos", only=labels, per_label=24)
    prepare_dataset(tmp_path / "photos", tmp_path / "data", fmt="folders", lang="en", split="0.5,0.25,0.25",
                    progress=False, workers=1)
    cfg = TrainConfig(data_dir=str(tmp_path / "data"), backbone="beit3-mini", method="mwa", out=str(tmp_path),
                      name="mini-defaults", device="cpu", workers=0, val_evals=0)
    res = train(cfg)
    assert res.exit_code == 0, res.message
    run_cfg = json.loads((res.run_dir / "config.json").read_text())
    assert run_cfg["positives_detail"]["templated"] and "lr" in run_cfg["auto_resolved"]
    assert run_cfg["lr"] == recommended_lr("beit3-mini", "mwa", templated=True) < recommended_lr("beit3-mini", "mwa")
    pairs = run_cfg["positives_detail"]["pairs"]
    steps = json.loads((res.run_dir / "timing.json").read_text())["steps"]
    assert run_cfg["batch_size"] == 32  # the CPU default: 40 epochs are the reference steps
    assert steps == TEMPLATED_DEFAULT_EPOCHS * (pairs // 32) > 0, (steps, pairs)
    ll = json.loads((res.run_dir / "eval.json").read_text())["label_level"]
    recall = {label: m["i2t"]["r1"] for label, m in ll["per_label"].items()}
    assert all(recall[k] > m["chance"]["i2t_r1"] for k, m in ll["per_label"].items()), recall


def test_unique_captions_train_exactly_as_before(train_data_dir, train_tokenizer, tmp_path):
    runs = {}
    for mode in ("auto", "off", "caption"):
        res = train(_cfg(train_data_dir, train_tokenizer, tmp_path, f"u-{mode}", steps=6, positives=mode,
                         batch_size=8, log_every=1))
        assert res.exit_code == 0, res.message
        runs[mode] = res.run_dir
    cfg = json.loads((runs["auto"] / "config.json").read_text())
    assert cfg["positives"] == "off" and cfg["positives_detail"]["groups"] == cfg["positives_detail"]["pairs"]
    w = {m: load_file(str(p / "adapter_model.safetensors")) for m, p in runs.items()}
    for name, t in w["off"].items():
        assert torch.equal(t, w["auto"][name]), name  # the same code path: bit-identical
        torch.testing.assert_close(w["caption"][name], t, atol=1e-5, rtol=1e-4)  # one positive per row
    ev = {m: json.loads((p / "eval.json").read_text()) for m, p in runs.items()}
    assert ev["auto"]["rsum"] == ev["off"]["rsum"] and ev["auto"]["primary_protocol"] == "instance"


def test_prepare_uses_label_descriptions_and_warns_about_code_names(tmp_path):
    photos = tmp_path / "photos"
    for label in ("ok", "ng", "07", "scratch"):
        (photos / label).mkdir(parents=True)
        Image.new("RGB", (16, 16), (len(label) * 40, 90, 10)).save(photos / label / "a.png")
        Image.new("RGB", (16, 16), (10, len(label) * 40, 90)).save(photos / label / "b.png")
    texts = parse_label_text_items(['ng="a part with a crack"', "ng=ひび割れのある部品"])
    res = prepare_dataset(photos, tmp_path / "data", fmt="folders", lang="both", image_size=16, progress=False,
                          label_texts=texts, workers=1)
    caps = set(res.report and __import__("pandas").read_csv(tmp_path / "data" / "manifest.csv")["caption"])
    assert "a photo of a part with a crack" in caps and "ひび割れのある部品の写真" in caps
    assert "a photo of scratch" in caps and "傷の写真" in caps
    warnings = [n for n in res.notes if n.startswith("warning:") and "split has only" not in n]  # 8 photos: tiny splits
    assert len(warnings) == 1 and "'07', 'ok'" in warnings[0] and "'ng'" not in warnings[0]
    assert '--label-text 07="' in warnings[0]


def test_prepare_cli_label_map_and_warning(tmp_path):
    photos = tmp_path / "photos"
    for label in ("global", "dent"):
        (photos / label).mkdir(parents=True)
        Image.new("RGB", (16, 16), (200, 10, len(label) * 20)).save(photos / label / "a.png")
    label_map = tmp_path / "labels.csv"
    label_map.write_text("label,en,ja\ndent,a small dent,小さなへこみ\n", encoding="utf-8")
    env = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "mwa_cli", "prepare", str(photos), "--out", str(tmp_path / "d"),
                           "--format", "folders", "--image-size", "16", "--label-map", str(label_map), "--json"],
                          capture_output=True, text=True, env=env, timeout=120, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert any("'global'" in n and "--label-text" in n for n in out["notes"])
    manifest = (tmp_path / "d" / "manifest.csv").read_text(encoding="utf-8")
    assert "a photo of a small dent" in manifest and "小さなへこみの写真" in manifest
    bad = subprocess.run([sys.executable, "-m", "mwa_cli", "prepare", str(photos), "--out", str(tmp_path / "e"),
                          "--format", "folders", "--label-text", "dent"], capture_output=True, text=True, env=env,
                         timeout=120, cwd=str(tmp_path))
    assert bad.returncode == 2 and "LABEL=PHRASE" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "e").exists()


def test_label_map_files_and_bad_input(tmp_path):
    j = tmp_path / "m.json"
    j.write_text(json.dumps({"ng": {"en": "a cracked part", "ja": "割れた部品"}, "ok": "a good part"}),
                 encoding="utf-8")
    assert load_label_map(j) == {"ng": {"en": "a cracked part", "ja": "割れた部品"}, "ok": {"en": "a good part"}}
    t = tmp_path / "m.tsv"
    t.write_text("label\ttext\nok\t良品\n", encoding="utf-8")
    assert load_label_map(t) == {"ok": {"ja": "良品"}}
    bad = tmp_path / "bad.csv"
    bad.write_text("name,description\nok,good\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="label column"):
        load_label_map(bad)
    broken = tmp_path / "broken.json"
    broken.write_text("{", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_label_map(broken)
    with pytest.raises(ConfigError, match="not LABEL=PHRASE"):
        parse_label_text_items(["ok="])
    assert [n for n in ("ok", "NG", "12", "class_3", "global", "scratch", "no_defect") if needs_description(n)] == [
        "ok", "NG", "12", "class_3", "global"]


def test_positives_label_on_partly_labelled_data_is_refused_before_the_run_starts(train_data_dir, train_tokenizer,
                                                                                  tmp_path):
    with pytest.raises(ConfigError, match="--positives label needs a label on every train pair") as exc:
        train(_cfg(train_data_dir, train_tokenizer, tmp_path / "runs", "lab", steps=2, positives="label"))
    assert "--positives caption" in exc.value.hint
    assert not (tmp_path / "runs" / "lab").exists()
    with pytest.raises(ConfigError, match="unknown --positives mode"):
        _cfg(train_data_dir, train_tokenizer, tmp_path / "runs", "x", positives="labels").validate()
