"""`mwa export RUN --format peft`: a LoRA run as a folder PEFT loads (`PeftModel.from_pretrained`, `LoraConfig`).

Written from the run's adapter files alone (no model is built; PEFT itself is not needed to write it):

| file | content |
|---|---|
| `adapter_config.json` | PEFT's LoRA config: ``peft_type`` LORA, ``r``, ``lora_alpha``, ``lora_dropout``, ``target_modules`` (the full names of the adapted ``nn.Linear`` modules), ``modules_to_save`` (the heads, when the run trained them) |
| `adapter_model.safetensors` | PEFT's key names: ``base_model.model.<module>.lora_A.weight`` / ``lora_B.weight``, ``base_model.model.<head>.weight`` |
| `mwa_peft.json` | where it came from (run, backbone and its weights' sha256, adapter sha256) and what PEFT's folder leaves out |

The base model PEFT attaches to: for BEiT-3, mwa's own ``BEiT3Retrieval`` built by
``mwa_cli.models.presets.build_backbone`` with the run's backbone and weights (the adapted modules are the Multiway
experts ``beit3.encoder.layers.<i>.self_attn.<q|k|v|out>_proj.<A|B>``, the vision and language copies); for a
Hugging Face backbone (``hf:``), the transformers model itself (``CLIPModel`` / ``SiglipModel``), names relative
to it. PEFT's LoRA computes ``W x + (alpha / r) B A dropout(x)`` as mwa's hook does, so the embeddings are the
same (tests/unit/export/test_peft.py compares them).

What PEFT cannot express, and so is refused or left out:
* the methods that are not LoRA: MWA's bottleneck adapters and its Alignment Enhancer, NKE, and full fine-tuning
  (`--format peft` refuses them; `--format onnx` exports any method);
* LoRA on slices of a fused ``qkv`` projection (BLIP-2's ViT) and a vocabulary extension (new token rows):
  refused;
* ``logit_scale``, the loss's temperature, a bare parameter of the model rather than a module: left out (its
  value is in mwa_peft.json). It scales similarities only: no embedding and no ranking depends on it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from mwa_cli import __version__
from mwa_cli.errors import ConfigError

PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
MANIFEST = "mwa_peft.json"
PREFIX = "base_model.model."
LEFT_OUT = ("logit_scale",)
HEADS = {"vision_head", "language_head", "hf.visual_projection", "hf.text_projection"}
_NOT_LORA = {"mwa": "MWA's bottleneck adapters and its Alignment Enhancer", "nke": "NKE's knowledge extractors",
             "full-ft": "full fine-tuning (every weight)", "frozen": "nothing (a frozen backbone)"}


def export_peft(run_dir: str | Path, out_dir: str | Path | None = None, *, overwrite: bool = False
                ) -> dict[str, Any]:
    """Write the LoRA run `run_dir` as a PEFT adapter folder (default RUN_DIR/export_peft); returns the `--json`
    summary. Refuses, with what PEFT cannot express, any other method and the LoRA variants it has no form for."""
    from safetensors.torch import load_file, save_file

    from mwa_cli.adapters.io import WEIGHTS_FILE, read_adapter_config, verify_adapter_weights
    from mwa_cli.export.manifest import export_out_dir
    from mwa_cli.fileio import atomic_write, atomic_write_json
    from mwa_cli.integrity import FILES_KEY

    t0 = time.perf_counter()
    folder, cfg = read_adapter_config(run_dir)
    _check_expressible(cfg)
    out = export_out_dir(folder, out_dir, "export_peft", MANIFEST, overwrite)
    verify_adapter_weights(folder, cfg)
    state = load_file(str(folder / WEIGHTS_FILE))
    tensors, targets, heads = _peft_tensors(state, is_hf=str(cfg["backbone"]["name"]).startswith("hf:"))
    opts = cfg["options"]
    peft_cfg = {"peft_type": "LORA", "task_type": None, "base_model_name_or_path": _base_name(cfg),
                "r": int(opts["rank"]), "lora_alpha": float(opts["alpha"]), "lora_dropout": float(opts["dropout"]),
                "target_modules": targets, "modules_to_save": heads or None, "bias": "none",
                "fan_in_fan_out": False, "init_lora_weights": True, "inference_mode": True, "use_rslora": False,
                "use_dora": False, "layers_to_transform": None, "layers_pattern": None, "rank_pattern": {},
                "alpha_pattern": {}, "revision": None}
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # written last: a half-replaced export is never taken as whole
    atomic_write(out / PEFT_WEIGHTS, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    atomic_write_json(out / PEFT_CONFIG, peft_cfg)
    left_out = {k: float(state[k].float().reshape(-1)[0]) for k in LEFT_OUT if k in state}
    atomic_write_json(out / MANIFEST, {
        "format": "peft", "run_dir": str(folder), "method": cfg["method"], "backbone": cfg["backbone"],
        "adapter_sha256": (cfg.get(FILES_KEY) or {}).get(WEIGHTS_FILE), "left_out": left_out,
        "base_model": ("mwa_cli.models.presets.build_backbone(backbone['name'], weights)" if not
                       str(cfg["backbone"]["name"]).startswith("hf:") else "the transformers model at "
                       "base_model_name_or_path"),
        "mwa_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return {"export": str(out), "run": str(folder), "format": "peft", "method": cfg["method"],
            "backbone": cfg["backbone"]["name"], "target_modules": len(targets), "modules_to_save": heads,
            "left_out": sorted(left_out), "files": {k: (out / k).stat().st_size for k in (PEFT_WEIGHTS, PEFT_CONFIG)},
            "seconds": round(time.perf_counter() - t0, 3)}


def _check_expressible(cfg: dict[str, Any]) -> None:
    method = cfg.get("method")
    if method != "lora":
        what = _NOT_LORA.get(str(method), f"method {method}'s modules")
        raise ConfigError(f"--format peft exports LoRA runs only: this run trained {what}, which PEFT's LoRA "
                          "cannot express", hint="export it with --format onnx (any method), or train a run with "
                                                 "--method lora for PEFT")
    if "blip2" in str(cfg["backbone"]["name"]).lower():
        raise ConfigError("--format peft cannot express LoRA on BLIP-2: its ViT's LoRA adapts slices of the fused "
                          "qkv projection, which PEFT has no form for", hint="export it with --format onnx")
    if cfg.get("token_additions"):
        raise ConfigError("--format peft cannot express the run's vocabulary extension (new token rows beside the "
                          "tokenizer)", hint="export it with --format onnx, or train with --extend-vocab off")


def _peft_tensors(state: dict[str, Any], *, is_hf: bool) -> tuple[dict[str, Any], list[str], list[str]]:
    """mwa's trainable tensors under PEFT's names; the adapted modules; the heads (PEFT's modules_to_save)."""
    tensors, targets, heads = {}, set(), set()
    for key, value in state.items():
        if key in LEFT_OUT:
            continue
        name = key[3:] if is_hf and key.startswith("hf.") else key  # relative to the transformers model
        module, _, leaf = name.rpartition(".lora.")
        if leaf in ("lora_A.weight", "lora_B.weight"):
            targets.add(module)
            tensors[PREFIX + f"{module}.{leaf}"] = value.contiguous()
        elif key.rsplit(".", 1)[0] in HEADS:
            heads.add(name.rsplit(".", 1)[0])
            tensors[PREFIX + name] = value.contiguous()
        else:
            raise ConfigError(f"--format peft cannot express the run's trainable tensor {key}",
                              hint="export it with --format onnx")
    return tensors, sorted(targets), sorted(heads)


def _base_name(cfg: dict[str, Any]) -> str | None:
    name = str(cfg["backbone"]["name"])
    return name[3:] if name.startswith("hf:") else name
