"""Vocabulary extension: token selection, step-0 equivalence, training, artefact round trip, the
tokenizers of eval and search, and Japanese file names / captions / queries end to end through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from mwa_cli.adapters import vocab
from mwa_cli.adapters.io import load_adapter, read_adapter_config, save_adapter
from mwa_cli.adapters.registry import apply_method
from mwa_cli.cli import app
from mwa_cli.models.presets import build_backbone
from mwa_cli.models.run_tokenizer import load_tokenizer
from mwa_cli.models.tokenizer import UNK_ID
from mwa_cli.train.trainer import Trainer

runner = CliRunner()
JA = ["右上に大きな傷がある金属板", "金属板の左下に小さな穴", "錆汚れのある布地", "溶接部の欠け"]
EN = ["a large scratch on the upper right", "a small hole on the lower left"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(method: str = "mwa"):
    torch.manual_seed(0)
    model, info = build_backbone("beit3-tiny-test")
    applied = apply_method(model, method)
    return model, applied, info


def _extended(method: str = "mwa", **kw):
    model, applied, info = _model(method)
    tok = load_tokenizer(info.tokenizer_path, 32)
    table, notes, record, _ = vocab.setup_for_training(model, applied, tok, JA + EN, "on", **kw)
    return model, applied, info, table, notes


def test_selects_the_characters_the_tokenizer_maps_to_unk():
    model, _, info = _model()
    tok = load_tokenizer(info.tokenizer_path, 32)
    new = vocab.select_new_tokens(tok, JA + EN)
    assert all(len(t) == 1 and not t.isspace() for t in new)
    assert not set("".join(EN)) & set(new)  # English is known: nothing of it is added
    assert set("".join(JA)) == set(new)  # the built-in tokenizer is English-only: every Japanese character
    assert new[0] in ("に", "の", "金", "属", "板")  # most frequent first
    for ch in new:
        assert UNK_ID in tok._sp_ids(ch)
    assert vocab.select_new_tokens(tok, EN) == []

    on = vocab.plan_extension(tok, JA, "auto")
    assert on.enabled and "auto" in on.reason and "%" in on.reason
    off = vocab.plan_extension(tok, EN, "auto")
    assert not off.enabled
    assert not vocab.plan_extension(tok, JA, "off").enabled
    assert not vocab.plan_extension(tok, JA, "auto", trains=False).enabled
    # a few unknown characters in mostly English captions stay under the 2 % threshold in auto mode
    few = [c + " 傷" if i == 0 else c for i, c in enumerate(EN * 20)]
    assert not vocab.plan_extension(tok, few, "auto").enabled
    assert vocab.plan_extension(tok, few, "on").enabled

    table = vocab.make_table(new, vocab.first_new_id(tok, model))
    assert table["base_vocab_size"] == 8192  # after the backbone's rows, not the tokenizer's 2802 ids
    assert sorted(table["tokens"].values()) == list(range(8192, 8192 + len(new)))


def test_step0_equivalence_for_captions_without_new_tokens():
    model, applied, info = _model()
    model.eval()
    tok = load_tokenizer(info.tokenizer_path, 32)
    ids, mask = tok.encode_batch(EN)
    with torch.no_grad():
        before = model.encode_text(ids, mask)
    vocab.setup_for_training(model, applied, tok, JA, "on")
    tok2 = load_tokenizer(info.tokenizer_path, 32, model=model)
    ids2, mask2 = tok2.encode_batch(EN)
    assert torch.equal(ids, ids2)
    with torch.no_grad():
        after = model.encode_text(ids2, mask2)
    assert torch.equal(before, after)
    ja_ids, _ = tok2.encode_batch(JA)
    assert int(ja_ids.max()) >= 8192 and UNK_ID not in ja_ids.tolist()[0]


def test_extension_trains_and_base_rows_do_not():
    model, applied, info, table, notes = _extended(lr_scale=10.0)
    assert any("new tokens" in n and "trainable parameters" in n for n in notes)
    ext = vocab.get_extension(model)
    name = "beit3.text_embed.extension.weight"
    assert name in dict(applied.trainable_named_parameters())
    assert applied.trainable_params() == sum(p.numel() for _, p in _model()[1].trainable_named_parameters()) + \
        ext.weight.numel()
    groups = applied.param_groups(1e-3, 0.05, 0.65)
    g = next(g for g in groups if name in g["names"])
    assert g["lr_scale"] == 10.0
    tok = load_tokenizer(info.tokenizer_path, 32, model=model)
    trainer = Trainer(model, applied, lr=1e-3, warmup_frac=0.0)
    base = model.beit3.text_embed.weight.detach().clone()
    rows = ext.weight.detach().clone()
    ids, mask = tok.encode_batch(JA[:2] + EN)
    batch = {"pixels": torch.randn(4, 3, 32, 32), "input_ids": ids, "padding_mask": mask}
    trainer.step(batch)
    used = sorted({i - ext.base for i in ids.flatten().tolist() if i >= ext.base})
    assert not torch.equal(ext.weight[used], rows[used])
    assert torch.equal(model.beit3.text_embed.weight, base)
    assert not model.beit3.text_embed.weight.requires_grad


def test_round_trip_is_bit_exact_with_the_token_table(tmp_path):
    model, applied, info, table, _ = _extended()
    with torch.no_grad():
        for _, p in applied.trainable_named_parameters():
            p.add_(torch.randn_like(p) * 0.05)
    save_adapter(tmp_path, model, applied, info)
    _, cfg = read_adapter_config(tmp_path)
    assert cfg["token_additions"] == json.loads(json.dumps(table, ensure_ascii=False))
    assert cfg["token_additions"]["tokens"]["傷"] >= cfg["token_additions"]["base_vocab_size"]
    assert "傷" in (tmp_path / "adapter_config.json").read_text(encoding="utf-8")  # readable, not \\u escapes
    assert cfg["trainable_params"] == applied.trainable_params()
    torch.manual_seed(0)
    model2, applied2, info2 = load_adapter(tmp_path)
    ext, ext2 = vocab.get_extension(model), vocab.get_extension(model2)
    assert torch.equal(ext.weight, ext2.weight)
    assert vocab.extension_table(model2)["tokens"] == table["tokens"]
    for (n, p), (n2, p2) in zip(applied.trainable_named_parameters(), applied2.trainable_named_parameters()):
        assert n == n2 and torch.equal(p, p2)
    model.eval()
    model2.eval()
    tok = load_tokenizer(info.tokenizer_path, 32, model=model)
    tok2 = load_tokenizer(info2.tokenizer_path, 32, model=model2)
    ids, mask = tok.encode_batch(JA + EN)
    assert torch.equal(ids, tok2.encode_batch(JA + EN)[0])
    with torch.no_grad():
        assert torch.equal(model.encode_text(ids, mask), model2.encode_text(ids, mask))


def test_search_and_eval_tokenizers_apply_the_extension(tmp_path):
    from mwa_cli.search.model import load_search_model

    model, applied, info, table, _ = _extended()
    save_adapter(tmp_path, model, applied, info)
    sm = load_search_model(tmp_path, device="cpu")
    assert sm.tokenizer.added_tokens == table["tokens"]
    assert sm.tokenizer.unknown_characters("右上の傷") == []
    q = sm.tokenizer.encode("右上の傷")
    assert q == [table["tokens"][c] for c in "右上の傷"]
    # a legacy flat {token: id} table is still read
    assert vocab.added_tokens_from({"傷": 9000}) == {"傷": 9000}
    assert vocab.added_tokens_from(None) is None


# ------------------------------------------------------------------------------------------------ end to end
def _photos(root: Path) -> Path:
    labels = {"傷": "右上に傷", "穴": "左下に穴", "錆": "中央に錆", "汚れ": "左上に汚れ"}
    rows = ["image,caption,label"]
    rng = np.random.default_rng(0)
    for i in range(16):
        label = list(labels)[i % 4]
        rel = f"写真/{label}_{i:02d}.png"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        img = (rng.random((24, 24, 3)) * 80).astype(np.uint8)
        img[(i % 4) * 6:(i % 4) * 6 + 6, :, i % 3] = 255
        Image.fromarray(img).save(path)
        rows.append(f"{rel},{labels[label]}がある金属板 {i},{label}")
        rows.append(f"{rel},金属板の{labels[label]},{label}")
    (root / "captions.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


def _ok(res):
    assert res.exit_code == 0, res.output
    return " ".join(res.output.split())


def test_japanese_end_to_end(tmp_path):
    photos = _photos(tmp_path / "現場の写真")
    data = tmp_path / "データ"
    out = _ok(runner.invoke(app, ["prepare", str(photos), "--out", str(data), "--image-size", "32",
                                  "--split", "0.5,0.25,0.25"]))
    assert "unknown" in out
    runs = tmp_path / "runs"
    common = ["--backbone", "beit3-tiny-test", "--steps", "3", "--batch-size", "4", "--out", str(runs),
              "--val-evals", "0", "--workers", "0", "--device", "cpu"]
    res = runner.invoke(app, ["train", str(data), "--method", "mwa", "--name", "日本語-mwa", *common])
    out = _ok(res)
    assert "vocabulary extension on (auto" in out and "new tokens" in out
    _ok(runner.invoke(app, ["train", str(data), "--method", "full-ft", "--name", "全体", *common]))
    run = runs / "日本語-mwa"
    cfg = json.loads((run / "adapter_config.json").read_text(encoding="utf-8"))
    assert cfg["token_additions"]["tokens"]["傷"] >= 8192
    timing = json.loads((run / "timing.json").read_text())
    assert timing["vocab_extension_params"] == len(cfg["token_additions"]["tokens"]) * 64
    before = json.loads((run / "eval.json").read_text())

    ev = runner.invoke(app, ["eval", str(run), "--json"])
    assert ev.exit_code == 0, ev.output
    after = json.loads((run / "eval.json").read_text())
    assert after["rsum"] == pytest.approx(before["rsum"], abs=1e-6)  # eval's tokenizer = training's

    index = tmp_path / "索引"
    _ok(runner.invoke(app, ["index", str(photos), "--adapter", str(run), "--out", str(index),
                            "--captions", str(data), "--workers", "1"]))
    res = runner.invoke(app, ["search", "右上の傷", "--index", str(index), "--top", "3", "--json"])
    assert res.exit_code == 0, res.output
    found = json.loads(res.stdout)
    text = json.dumps(found, ensure_ascii=False)
    assert "写真/" in text and "unknown to the tokenizer" not in text
    html = tmp_path / "結果.html"
    _ok(runner.invoke(app, ["search", "左下に穴", "--index", str(index), "--html", str(html)]))
    assert html.is_file()

    rep = runner.invoke(app, ["report", "--runs", str(runs), "--lang", "ja", "--out", str(tmp_path / "報告.html")])
    assert rep.exit_code == 0, rep.output
    assert "結論" in rep.output
    assert (tmp_path / "報告.html").is_file()


def test_resume_reattaches_the_same_table(tmp_path):
    from mwa_cli.train.config import TrainConfig
    from mwa_cli.train.loop import train
    from tests.helpers.data_dir import make_train_data_dir as train_make_data_dir

    data = train_make_data_dir(tmp_path / "data", n_images=16)
    cfg = dict(data_dir=str(data), backbone="beit3-tiny-test", out=str(tmp_path / "runs"), name="r", method="mwa",
               steps=4, batch_size=8, checkpoint_every=2, val_evals=0, workers=0, extend_vocab="on", device="cpu")
    first = train(TrainConfig(**cfg))
    assert first.status == "completed"
    run = first.run_dir
    table = json.loads((run / "config.json").read_text(encoding="utf-8"))["token_additions"]
    assert vocab.added_tokens_from(table) and "左" in table["tokens"]
    saved = dict(load_file_st(run / "adapter_model.safetensors"))
    (run / "adapter_model.safetensors").unlink()
    (run / "eval.json").unlink()
    again = train(TrainConfig(resume=str(run), out=cfg["out"]))
    assert again.status == "completed"
    assert json.loads((run / "adapter_config.json").read_text(encoding="utf-8"))["token_additions"] == table
    resumed = load_file_st(run / "adapter_model.safetensors")
    assert torch.equal(saved["beit3.text_embed.extension.weight"], resumed["beit3.text_embed.extension.weight"])


def load_file_st(path):
    from safetensors.torch import load_file

    return load_file(str(path))
