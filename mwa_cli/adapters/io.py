"""Adapter artefacts: ``adapter_model.safetensors`` (trainable weights only) + ``adapter_config.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mwa_cli import __version__, integrity
from mwa_cli.adapters.registry import AppliedMethod, apply_method
from mwa_cli.errors import CheckpointError
from mwa_cli.fileio import atomic_write
from mwa_cli.finite import NonFinite, nonfinite_names
from mwa_cli.models.base import BackboneInfo
from mwa_cli.models.beit3 import BEiT3Retrieval
from mwa_cli.models.presets import build_backbone
from mwa_cli.models.sources import NO_WEIGHTS
from mwa_cli.safe_open import InputFileError, load_json

WEIGHTS_FILE = "adapter_model.safetensors"
CONFIG_FILE = "adapter_config.json"
FORMAT_VERSION = 1
NONFINITE_HINT = "train the run again (a lower --lr or --precision fp32 usually keeps the weights finite)"


def adapter_config(applied: AppliedMethod, info: BackboneInfo,
                   token_additions: dict[str, Any] | None = None) -> dict[str, Any]:
    """What re-attaching the adapter needs: method, options, layers, backbone identity, token additions
    (the model's vocabulary extension table when not given: see `mwa_cli.adapters.vocab`)."""
    if token_additions is None:
        from mwa_cli.adapters.vocab import extension_table

        token_additions = extension_table(applied.model)
    backbone = {"name": info.name, "config": info.config, "weights_sha256": info.weights_sha256}
    if info.random_weights:  # `--weights none`: every command that loads the adapter rebuilds it random and says so
        backbone["random_weights"] = True
    return {
        "format_version": FORMAT_VERSION,
        "method": applied.name,
        "mwa_version": __version__,
        "backbone": backbone,
        "options": applied.options,
        "layers": applied.layers,
        "trainable_params": applied.trainable_params(),
        "total_params": applied.total_params(),
        "token_additions": token_additions,
    }


def save_adapter(run_dir: str | Path, model: BEiT3Retrieval, applied: AppliedMethod, info: BackboneInfo,
                 token_additions: dict[str, Any] | None = None) -> Path:
    """Write the trainable weights (full weights for full-ft) and their config, atomically."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tensors = {n: p.detach().to("cpu").contiguous() for n, p in applied.trainable_named_parameters()}
    bad = nonfinite_names(tensors.items())
    if bad:  # training checks before it gets here; this is the last line of defence
        raise NonFinite(f"the adapter's weights hold NaN or infinity ({', '.join(bad[:3])}): not published",
                        hint=NONFINITE_HINT)
    atomic_write(run_dir / WEIGHTS_FILE, lambda tmp: save_file(tensors, tmp, metadata={"method": applied.name}))
    cfg = adapter_config(applied, info, token_additions)
    cfg[integrity.FILES_KEY] = integrity.record(run_dir, [WEIGHTS_FILE])  # written after the weights it hashes
    text = json.dumps(cfg, indent=2, ensure_ascii=False)
    atomic_write(run_dir / CONFIG_FILE, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return run_dir / WEIGHTS_FILE


def read_adapter_config(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """Locate and parse ``adapter_config.json`` in a run dir or beside an adapter file."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist", hint="pass a run folder written by `mwa train`")
    folder = path if path.is_dir() else path.parent
    cfg_path = folder / CONFIG_FILE
    if not cfg_path.is_file():
        raise CheckpointError(f"no {CONFIG_FILE} in {folder}",
                              hint="pass a run folder written by `mwa train` or the folder of an adapter")
    try:
        cfg = load_json(cfg_path)
    except InputFileError as exc:
        raise CheckpointError(f"{cfg_path} is not valid JSON: {exc.reason}") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{cfg_path} holds {type(cfg).__name__}, not the object mwa writes",
                              hint="it was changed by hand or by another program: restore it or train again")
    if cfg.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{cfg_path} has format version {cfg.get('format_version')}, "
                              f"this mwa reads {FORMAT_VERSION}")
    return folder, cfg


def verify_adapter_weights(folder: Path, cfg: dict[str, Any]) -> None:
    """The weights file against the sha256 its adapter_config.json records (older adapters: not recorded)."""
    integrity.verify(folder, cfg, [WEIGHTS_FILE], side_name=CONFIG_FILE,
                     remedy="restore the run folder from a backup, or train the run again; nothing was written")


def _check_backbone(cfg: dict[str, Any], info: BackboneInfo) -> None:
    recorded = cfg["backbone"]
    diffs = [f"{k}: adapter {recorded['config'].get(k)!r} vs backbone {v!r}"
             for k, v in info.config.items() if k != "drop_path" and recorded["config"].get(k) != v]
    if diffs:
        raise CheckpointError(f"the adapter was made for another backbone ({recorded['name']}): " + "; ".join(diffs),
                              hint=f"use --backbone {recorded['name']} with the weights it was trained on")
    want, have = recorded.get("weights_sha256"), info.weights_sha256
    if want and have and want != have:
        raise CheckpointError(
            f"the adapter was trained on backbone weights {want[:12]}…, but the weights given are {have[:12]}…",
            hint="pass the same --weights file the adapter was trained with")


def load_adapter(
    path: str | Path,
    *,
    weights: str | None = None,
    model: BEiT3Retrieval | None = None,
    info: BackboneInfo | None = None,
    tokenizer: str | None = None,
    device: torch.device | str | None = None,
) -> tuple[BEiT3Retrieval, AppliedMethod, BackboneInfo]:
    """Rebuild (or check) the backbone (on `device`: the CPU when None), re-apply the method and load the adapter
    weights bit-exactly."""
    folder, cfg = read_adapter_config(path)
    verify_adapter_weights(folder, cfg)
    if model is None:
        name = cfg["backbone"]["name"]
        source = cfg["backbone"]["config"] if name.startswith("config:") else name
        if weights is None and cfg["backbone"].get("random_weights"):
            weights = NO_WEIGHTS  # trained on a random backbone: rebuilt the same (seeded), never pretrained
        model, info = build_backbone(source, weights, tokenizer=tokenizer, device=device)
    assert info is not None
    _check_backbone(cfg, info)
    applied = apply_method(model, cfg["method"], cfg["options"])
    if cfg.get("token_additions"):  # vocabulary extension: re-attach it; its rows are loaded with the adapter
        from mwa_cli.adapters.vocab import attach_extension

        attach_extension(model, cfg["token_additions"], applied)
    try:
        state = load_file(str(folder / WEIGHTS_FILE))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"cannot read {folder / WEIGHTS_FILE}: {exc}",
                              hint="the file may be truncated; train again or restore it") from None
    params = dict(applied.trainable_named_parameters())
    missing, unexpected = sorted(set(params) - set(state)), sorted(set(state) - set(params))
    if missing or unexpected:
        raise CheckpointError(f"{folder / WEIGHTS_FILE} does not match method {cfg['method']}: "
                              f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    wrong = [n for n, p in params.items() if tuple(p.shape) != tuple(state[n].shape)]
    if wrong:
        raise CheckpointError(f"{folder / WEIGHTS_FILE} has tensors of the wrong shape: {wrong[:3]}")
    bad = nonfinite_names(state.items())  # NaN weights would "score" a perfect recall: never used
    if bad:
        raise NonFinite(f"{folder / WEIGHTS_FILE} holds NaN or infinity in {len(bad)} of {len(state)} tensors "
                        f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}): it cannot be evaluated or used",
                        hint=NONFINITE_HINT)
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(state[n].to(p.dtype))
    return model, applied, info
