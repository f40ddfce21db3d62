"""`mwa export --format onnx`: onnxruntime reproduces mwa's embeddings (every method, tiny BEiT-3 and beit3-mini),
`mwa index` / `mwa search --model EXPORT_DIR` work without mwa's PyTorch model code, and bad input is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from mwa_cli.adapters.io import save_adapter
from mwa_cli.adapters.registry import apply_method, names
from mwa_cli.cli import app
from mwa_cli.errors import CheckpointError, ConfigError, IntegrityError
from mwa_cli.export.onnx import IMAGE_FILE, MANIFEST_FILE, export_onnx
from mwa_cli.export.runtime import ExportedModel
from mwa_cli.models.presets import build_backbone
from mwa_cli.search.build import build_index
from mwa_cli.search.model import load_search_model
from mwa_cli.search.query import search
from mwa_cli.search.store import SearchIndex
from tests.helpers.adapter_runs import perturbed_adapter_run
from tests.helpers.paths import REPO

pytestmark = pytest.mark.usefixtures("one_torch_thread")
runner = CliRunner()


make_run = perturbed_adapter_run


def photos(root: Path, n: int = 6) -> Path:
    for i in range(n):
        rng = np.random.default_rng(i)
        (root / ("sub" if i % 2 else "")).mkdir(parents=True, exist_ok=True)
        Image.fromarray((rng.random((30, 40, 3)) * 255).astype(np.uint8)).save(
            root / ("sub" if i % 2 else "") / f"p{i}.png")
    return root


def _cos(a, b) -> float:
    return float(torch.nn.functional.cosine_similarity(torch.as_tensor(a), torch.as_tensor(b)).min())


@pytest.mark.parametrize("backbone", ["beit3-tiny-test", "beit3-mini"])
@pytest.mark.parametrize("method", names())
def test_onnxruntime_matches_mwa_embeddings(tmp_path, backbone, method):
    run = make_run(tmp_path / "run", backbone, method)
    summary = export_onnx(run, tmp_path / "exp")
    assert summary["check"]["min_cosine_image"] >= 0.9999 and summary["check"]["min_cosine_text"] >= 0.9999
    sm = load_search_model(run, device="cpu")
    em = ExportedModel.load(tmp_path / "exp")
    rng = np.random.default_rng(5)
    u8 = (rng.random((5, sm.image_size, sm.image_size, 3)) * 255).astype(np.uint8)  # batch ≠ the traced 2
    texts = ["a long scratch on the upper left", "右上に傷", "dent near the weld", "x", "<script>"]
    assert _cos(em.encode_pixels(u8), sm.encode_pixels(u8)) >= 0.9999
    assert _cos(em.encode_texts(texts), sm.encode_texts(texts)) >= 0.9999
    # the adapter is in the graph: the export is far closer to the adapted model than to the bare backbone
    if method != "frozen":
        frozen = make_run(tmp_path / "frozen", backbone, "frozen")
        got = em.encode_pixels(u8)
        export_err = np.abs(got - sm.encode_pixels(u8).numpy()).max()
        adapter_effect = np.abs(got - load_search_model(frozen, device="cpu").encode_pixels(u8).numpy()).max()
        assert adapter_effect > 20 * export_err


def test_manifest_records_what_a_line_needs(tmp_path):
    run = make_run(tmp_path / "run", "beit3-tiny-test", "mwa")
    (run / "config.json").write_text(json.dumps({"dataset_hash": "abc123", "seed": 0}))
    export_onnx(run, tmp_path / "exp")
    m = json.loads((tmp_path / "exp" / MANIFEST_FILE).read_text())
    from mwa_cli.fileio import sha256_file

    assert m["run_id"] == "run" and m["dataset_hash"] == "abc123" and m["method"] == "mwa"
    assert m["adapter_sha256"] == sha256_file(run / "adapter_model.safetensors")
    assert m["image"]["size"] == 32 and m["image"]["normalisation"]["mean"] == [0.5] * 3
    assert m["text"]["text_len"] == 32 and m["opset"] == 17
    assert {"mwa", "torch", "onnx"} <= set(m["versions"])
    assert (tmp_path / "exp" / "tokenizer.spm").is_file()


def test_a_damaged_exported_graph_is_refused_by_name(tmp_path):
    from mwa_cli.export.runtime import ExportedModel

    run = make_run(tmp_path / "run", "beit3-tiny-test", "mwa")
    export_onnx(run, tmp_path / "exp")
    m = json.loads((tmp_path / "exp" / MANIFEST_FILE).read_text())
    assert set(m["files"]) == {"image_encoder.onnx", "text_encoder.onnx", "tokenizer.spm"}
    ExportedModel.load(tmp_path / "exp")  # intact: loads
    graph = tmp_path / "exp" / "text_encoder.onnx"
    data = bytearray(graph.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 30):  # 30 flipped bytes inside the weights
        data[i] ^= 0xFF
    graph.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="text_encoder.onnx is damaged") as err:
        ExportedModel.load(tmp_path / "exp")
    assert err.value.exit_code == 6 and "mwa export" in err.value.hint


def test_vocabulary_extension_is_exported(tmp_path):
    from mwa_cli.adapters import vocab

    torch.manual_seed(0)
    model, info = build_backbone("beit3-tiny-test")
    applied = apply_method(model, "mwa")
    from mwa_cli.models.run_tokenizer import load_tokenizer

    tok = load_tokenizer(info.tokenizer_path, 32)
    table = vocab.make_table(["傷", "溶"], vocab.first_new_id(tok, model))
    vocab.attach_extension(model, table, applied)
    with torch.no_grad():
        model.beit3.text_embed.extension.weight.normal_()
    save_adapter(tmp_path / "run", model, applied, info)
    export_onnx(tmp_path / "run", tmp_path / "exp")
    em = ExportedModel.load(tmp_path / "exp")
    assert em.tokenizer.added_tokens == table["tokens"]
    sm = load_search_model(tmp_path / "run", device="cpu")
    assert _cos(em.encode_texts(["溶接の傷"]), sm.encode_texts(["溶接の傷"])) >= 0.9999


def test_index_and_search_with_an_export_use_no_pytorch_model_code(tmp_path):
    run = make_run(tmp_path / "run", "beit3-tiny-test", "mwa")
    export_onnx(run, tmp_path / "exp")
    pics = photos(tmp_path / "photos")
    script = (
        "import json, sys\n"
        "from mwa_cli.search.build import build_index\n"
        "from mwa_cli.search.model import load_search_model\n"
        "from mwa_cli.search.store import SearchIndex\n"
        "from mwa_cli.search.query import search\n"
        f"s = build_index({str(pics)!r}, {str(tmp_path / 'exp')!r}, {str(tmp_path / 'idx')!r})\n"
        f"idx = SearchIndex.load({str(tmp_path / 'idx')!r})\n"
        f"sm = load_search_model({str(tmp_path / 'exp')!r})\n"
        "r = search(idx, sm, text='a scratch', top=3)\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('mwa_cli.models.beit3', 'mwa_cli.models.hf',\n"
        "             'mwa_cli.adapters', 'mwa_cli.train', 'mwa_cli.eval', 'transformers')))\n"
        "print(json.dumps({'bad': bad, 'n': s['counts']['images'], 'hits': len(r['images'])}))\n")
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res == {"bad": [], "n": 6, "hits": 3}


def test_export_and_run_indexes_agree_and_are_interchangeable(tmp_path):
    run = make_run(tmp_path / "run", "beit3-tiny-test", "lora")
    export_onnx(run, tmp_path / "exp")
    pics = photos(tmp_path / "photos")
    build_index(pics, run, tmp_path / "idx_torch", device="cpu")
    build_index(pics, tmp_path / "exp", tmp_path / "idx_onnx")
    a, b = SearchIndex.load(tmp_path / "idx_torch"), SearchIndex.load(tmp_path / "idx_onnx")
    assert a.row_ids == b.row_ids and _cos(np.array(a.images), np.array(b.images)) >= 0.9999
    assert b.meta["model"] == str((tmp_path / "exp").resolve())
    # same adapter identity: the export answers on the PyTorch-built index, with the same ranking
    em = ExportedModel.load(tmp_path / "exp")
    ra = search(a, load_search_model(run, device="cpu"), text="a scratch", top=6)
    rb = search(a, em, text="a scratch", top=6)
    assert [h["path"] for h in ra["images"]] == [h["path"] for h in rb["images"]]


def test_cli_export_index_search(tmp_path):
    run = make_run(tmp_path / "run", "beit3-tiny-test", "mwa")
    res = runner.invoke(app, ["export", str(run), "--format", "onnx", "--out", str(tmp_path / "exp"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["check"]["min_cosine_text"] >= 0.9999
    pics = photos(tmp_path / "photos")
    res = runner.invoke(app, ["index", str(pics), "--model", str(tmp_path / "exp"), "--out", str(tmp_path / "idx"),
                              "--json"])
    assert res.exit_code == 0, res.output
    # the index remembers the export: no --model needed to search it
    res = runner.invoke(app, ["search", "a scratch", "--index", str(tmp_path / "idx"), "--json", "--top", "2"])
    assert res.exit_code == 0, res.output
    assert len(json.loads(res.output)["images"]) == 2
    res = runner.invoke(app, ["search", "--image", str(pics / "p0.png"), "--index", str(tmp_path / "idx"),
                              "--model", str(tmp_path / "exp"), "--json", "--top", "1"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["images"][0]["path"] == "p0.png"


def test_bad_input_is_refused_clearly(tmp_path):
    run = make_run(tmp_path / "run", "beit3-tiny-test", "mwa")
    res = runner.invoke(app, ["export", str(run), "--format", "tflite"])
    assert res.exit_code == 2 and "onnx" in res.output
    res = runner.invoke(app, ["export", str(run), "--opset", "11"])
    assert res.exit_code == 2 and "opset" in res.output
    assert not (run / "export_onnx").exists()
    export_onnx(run)  # default folder: RUN_DIR/export_onnx
    with pytest.raises(ConfigError, match="already holds an export"):
        export_onnx(run)
    export_onnx(run, overwrite=True)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="holds files mwa did not write"):
        export_onnx(run, tmp_path / "junk")
    assert (tmp_path / "junk" / "notes.txt").read_text() == "keep me"
    pics = photos(tmp_path / "photos")
    res = runner.invoke(app, ["index", str(pics), "--model", str(tmp_path / "junk")])
    assert res.exit_code == 2 and "not an exported model" in " ".join(res.output.split())
    res = runner.invoke(app, ["index", str(pics), "--model", str(run / "export_onnx"), "--adapter", str(run)])
    assert res.exit_code == 2 and "exactly one" in res.output
    # a damaged graph: a clear error, not an onnxruntime traceback (its sha256 no longer matches export.json;
    # an export written before hashes were recorded reaches onnxruntime, which is refused clearly too)
    (run / "export_onnx" / IMAGE_FILE).write_bytes(b"not a graph")
    with pytest.raises(IntegrityError, match="image_encoder.onnx is damaged"):
        ExportedModel.load(run / "export_onnx")
    manifest = json.loads((run / "export_onnx" / MANIFEST_FILE).read_text())
    with pytest.raises(CheckpointError, match="onnxruntime cannot load"):
        ExportedModel.load(run / "export_onnx", manifest={k: v for k, v in manifest.items() if k != "files"})
    # an index built by another adapter is refused with the export too
    other = make_run(tmp_path / "other", "beit3-tiny-test", "mwa", seed=7)
    export_onnx(other, tmp_path / "other_exp")
    build_index(pics, run, tmp_path / "idx", device="cpu")
    res = runner.invoke(app, ["search", "a scratch", "--index", str(tmp_path / "idx"), "--model",
                              str(tmp_path / "other_exp")])
    assert res.exit_code == 2 and "another adapter" in " ".join(res.output.split())


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_hugging_face_backbones_export_too(tmp_path, kind):
    from tests.unit.models.test_hf_backbones import make_tiny_hf

    hf_dir = make_tiny_hf(tmp_path / "hf", kind)
    torch.manual_seed(0)
    model, info = build_backbone(f"hf:{hf_dir}")
    applied = apply_method(model, "mwa")
    with torch.no_grad():
        for _, p in applied.trainable_named_parameters():
            p.add_(torch.randn_like(p) * 0.02)
    save_adapter(tmp_path / "run", model, applied, info)
    summary = export_onnx(tmp_path / "run", tmp_path / "exp")
    assert min(summary["check"]["min_cosine_image"], summary["check"]["min_cosine_text"]) >= 0.9999
    assert (tmp_path / "exp" / "tokenizer").is_dir()
    em, sm = ExportedModel.load(tmp_path / "exp"), load_search_model(tmp_path / "run", device="cpu")
    texts = ["a red scratch on a steel plate number 3", "blue dent mark 7 on the left"]
    assert _cos(em.encode_texts(texts), sm.encode_texts(texts)) >= 0.9999
