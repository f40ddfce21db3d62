"""Write a run's adapted encoders as ONNX graphs (TorchScript-based exporter) with its tokenizer and manifest."""

from __future__ import annotations

import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mwa_cli import __version__
from mwa_cli.errors import EXIT_EXPORT, ConfigError, MwaError
from mwa_cli.export.manifest import FORMAT_VERSION, MANIFEST_FILE, export_out_dir
from mwa_cli.fileio import atomic_write
from mwa_cli.runs import read_run_config

IMAGE_FILE = "image_encoder.onnx"
TEXT_FILE = "text_encoder.onnx"
SPM_FILE = "tokenizer.spm"
HF_TOKENIZER_DIR = "tokenizer"
DEFAULT_OPSET = 17


class _ImageEncoder(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixel_values)


class _TextEncoder(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(input_ids, padding_mask)


def _export_graph(module: nn.Module, args: tuple, path: Path, input_names: list[str], opset: int) -> None:
    """One graph, dynamic batch, written to a temporary name then renamed."""
    module.eval()  # the exporter restores the wrapper's mode afterwards: a wrapper in train mode would re-enable dropout
    axes = {name: {0: "batch"} for name in [*input_names, "embedding"]}

    def write(tmp: str) -> None:
        with warnings.catch_warnings():
            # the TorchScript exporter is deprecated in favour of torch.export's (needs onnxscript; see
            # docs/decisions.md) and warns about shape checks that are constants for a fixed input size
            warnings.simplefilter("ignore")
            torch.onnx.export(module, args, tmp, dynamo=False, input_names=input_names,
                              output_names=["embedding"], dynamic_axes=axes, opset_version=opset,
                              do_constant_folding=True)

    atomic_write(path, write)


def export_onnx(run_dir: str | Path, out_dir: str | Path | None = None, *, weights: str | None = None,
                tokenizer: str | None = None, opset: int = DEFAULT_OPSET, check: bool = True,
                overwrite: bool = False) -> dict[str, Any]:
    """Export the run's image and text encoders (backbone + adapter + heads, one graph each) to `out_dir`
    (default RUN_DIR/export_onnx). With `check`, onnxruntime runs both graphs on a small batch and the cosine to
    the PyTorch embeddings is recorded in the manifest (export fails below 0.9999). Returns the `--json` summary."""
    import onnx

    from mwa_cli.adapters.io import read_adapter_config
    from mwa_cli.search.model import load_search_model

    if opset < 14:
        raise ConfigError(f"--opset must be at least 14 (got {opset})",
                          hint="scaled dot-product attention needs opset 14 or later; the default is 17")
    t0 = time.perf_counter()
    folder, adapter_cfg = read_adapter_config(run_dir)
    out = export_out_dir(folder, out_dir, "export_onnx", MANIFEST_FILE, overwrite)
    run_cfg = read_run_config(folder)
    sm = load_search_model(folder, weights=weights, tokenizer=tokenizer, device="cpu")
    model = sm.model.float().eval()
    cfg = model.config
    size, text_len = int(cfg.img_size), int(sm.tokenizer.max_len)
    torch.manual_seed(0)
    px = torch.randn(2, 3, size, size)
    ids, mask = sm.tokenizer.encode_batch(["a scratch on the upper left", "右上に傷"])
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_FILE).unlink(missing_ok=True)  # written last: a half-replaced export is never taken as whole
    with torch.inference_mode(False), torch.no_grad():
        _export_graph(_ImageEncoder(model), (px,), out / IMAGE_FILE, ["pixel_values"], opset)
        _export_graph(_TextEncoder(model), (ids, mask), out / TEXT_FILE, ["input_ids", "padding_mask"], opset)
    for name in (IMAGE_FILE, TEXT_FILE):
        onnx.checker.check_model(str(out / name))
    # SigLIP ignores padding: its graph keeps input_ids only
    text_inputs = [i.name for i in onnx.load(str(out / TEXT_FILE), load_external_data=False).graph.input]

    tok_meta = _copy_tokenizer(sm.tokenizer, sm.tokenizer_path, out)
    is_hf = str(sm.identity.get("backbone") or "").startswith("hf:")
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "format": "onnx",
        "run_id": folder.name,
        "run_dir": str(folder),
        "dataset_hash": run_cfg.get("dataset_hash"),
        "method": sm.method,
        "backbone": sm.identity.get("backbone"),
        "identity": sm.identity,
        "adapter_sha256": sm.identity.get("adapter_weights_sha256"),
        "image": {"file": IMAGE_FILE, "input": "pixel_values", "size": size, "layout": "NCHW RGB",
                  "patch_size": int(getattr(cfg, "patch_size", 0) or 0) or None,
                  "resize": "plain square resize to size × size",
                  "normalisation": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "scale": 1 / 255},
                  "model_mean": getattr(model, "image_mean", None), "model_std": getattr(model, "image_std", None)},
        "text": {"file": TEXT_FILE, "inputs": text_inputs, "text_len": text_len,
                 "padding_mask": "1 = pad", **tok_meta},
        "embedding_dim": int(model.encode_text(ids[:1], mask[:1]).shape[1]),
        "opset": opset,
        "versions": {"mwa": __version__, "torch": torch.__version__, "onnx": onnx.__version__},
        "hf": is_hf,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if getattr(sm.info, "random_weights", False):  # `--weights none`: every load of the export says so
        manifest["random_weights"] = True
    if check:
        manifest["check"] = _check(out, model, sm.tokenizer, size)
    from mwa_cli.fileio import atomic_write_json
    from mwa_cli.integrity import FILES_KEY, record

    published = [IMAGE_FILE, TEXT_FILE] + ([SPM_FILE] if (out / SPM_FILE).is_file() and not is_hf else [])
    manifest[FILES_KEY] = record(out, published)  # checked by every load (export/runtime.py)

    atomic_write_json(out / MANIFEST_FILE, manifest)
    return {"export": str(out), "run": str(folder), "method": sm.method, "backbone": manifest["backbone"],
            "files": {k: (out / k).stat().st_size for k in (IMAGE_FILE, TEXT_FILE)},
            "check": manifest.get("check"), "seconds": round(time.perf_counter() - t0, 3),
            "adapter_method": adapter_cfg.get("method")}


def _copy_tokenizer(tok: Any, tok_path: str | None, out: Path) -> dict[str, Any]:
    """The run's tokenizer beside the graphs; the vocabulary extension's table goes into the manifest."""
    if tok_path and str(tok_path).startswith("hf:"):
        dest = out / HF_TOKENIZER_DIR
        shutil.rmtree(dest, ignore_errors=True)
        tok.tok.save_pretrained(str(dest))
        return {"tokenizer": {"kind": "hf", "path": HF_TOKENIZER_DIR}}
    if not tok_path or not Path(tok_path).is_file():
        raise ConfigError(f"the run's tokenizer {tok_path} is not a file", hint="pass --tokenizer PATH")
    shutil.copyfile(tok_path, out / SPM_FILE)
    return {"tokenizer": {"kind": "beit3-spm", "path": SPM_FILE,
                          "added_tokens": dict(getattr(tok, "added_tokens", {}) or {})}}


def _check(out: Path, model: nn.Module, tok: Any, size: int) -> dict[str, Any]:
    """onnxruntime against PyTorch on a few inputs: the minimum cosine per encoder (refused below 0.9999)."""
    from mwa_cli.export.runtime import ExportedModel

    g = torch.Generator().manual_seed(1)
    u8 = torch.randint(0, 256, (3, size, size, 3), generator=g, dtype=torch.uint8)
    texts = ["a long scratch near the weld", "左上に長い傷", "dent"]
    files = {"image": {"file": IMAGE_FILE}, "text": {"file": TEXT_FILE}, "identity": {}}
    em = ExportedModel.load(out, manifest=files)
    with torch.no_grad():
        from mwa_cli.models.preprocess import to_pixels

        ref_i = model.encode_image(to_pixels(u8, size))
        ids, mask = tok.encode_batch(texts)
        ref_t = model.encode_text(ids, mask)
    got_i = torch.from_numpy(em.encode_pixels(u8.numpy()))
    got_t = torch.from_numpy(em.encode_text_ids(ids.numpy(), mask.numpy()))
    cos_i = float(torch.nn.functional.cosine_similarity(got_i, ref_i).min())
    cos_t = float(torch.nn.functional.cosine_similarity(got_t, ref_t).min())
    if min(cos_i, cos_t) < 0.9999:
        raise MwaError(f"the exported graphs do not reproduce the model (cosine image {cos_i:.6f}, "
                       f"text {cos_t:.6f}, need 0.9999)",
                       hint="report this with the run's adapter_config.json; try another --opset",
                       exit_code=EXIT_EXPORT)
    return {"min_cosine_image": round(cos_i, 7), "min_cosine_text": round(cos_t, 7), "runtime": "onnxruntime CPU"}
