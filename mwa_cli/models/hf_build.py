"""Building ``hf:`` backbones and the ``blip2-itm-vit-g`` preset from transformers configs and weights.

Above both wrappers: a config's ``model_type`` picks the two-tower wrapper (``mwa_cli.models.hf``) or BLIP-2's
(``mwa_cli.models.blip2``), which know nothing of each other's builders; ``mwa_cli.models.presets`` dispatches here.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from mwa_cli.errors import ConfigError
from mwa_cli.models.base import BackboneInfo
from mwa_cli.models.blip2 import PRESET, Blip2Retrieval, check_preset_layout, check_retrieval_config, preset_config
from mwa_cli.models.hf import PREFIX, HFDualEncoder, is_hf_name, model_class


def _read_processor_stats(source: str, local: bool) -> tuple[list[float] | None, list[float] | None]:
    try:
        from transformers.utils import cached_file

        path = cached_file(source, "preprocessor_config.json", local_files_only=local,
                           _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False)
    except Exception:  # noqa: BLE001 - no processor config: per-type defaults
        path = None
    if not path:
        return None, None
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return data.get("image_mean"), data.get("image_std")


def _weights_sha256(folder: Path) -> str | None:
    """sha256 over the weight files of a local model directory (name + bytes, sorted)."""
    files = sorted({p for pattern in ("*.safetensors", "pytorch_model*.bin") for p in folder.glob(pattern)})
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()


def _wrapper_class(config):
    """The project-side wrapper of a transformers config: BLIP-2's ITC path, or the two-tower one."""
    if config.model_type == "blip-2":
        check_retrieval_config(config)
        return Blip2Retrieval
    return HFDualEncoder


def build_hf_backbone(name: str, weights: str | None = None, *, tokenizer: str | None = None,
                      device: torch.device | str | None = None):
    """``hf:<id or dir>`` -> (HFDualEncoder, BackboneInfo). ``device="meta"`` builds from the config only."""
    from transformers import AutoConfig

    source = name[len(PREFIX):] if is_hf_name(name) else name
    if not source:
        raise ConfigError("empty hf: backbone", hint="use hf:openai/clip-vit-base-patch16 or hf:/path/to/model_dir")
    if weights is not None:
        raise ConfigError("hf: backbones read their weights from the model directory or hub id; --weights is not used",
                          hint="drop --weights, or point --backbone hf:DIR at a directory holding the weights")
    local = Path(source).is_dir()
    if local:
        source = str(Path(source).resolve())
    try:
        config = AutoConfig.from_pretrained(source, local_files_only=local)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the Hugging Face config of {source}: {exc}",
                          hint="give a local model directory (config.json + weights + tokenizer) or, online, a hub "
                               "id such as openai/clip-vit-base-patch16") from None
    cls = model_class(config.model_type)
    wrapper = _wrapper_class(config)
    mean, std = _read_processor_stats(source, local)
    canonical = f"{PREFIX}{source}"
    if str(device) == "meta":
        with torch.device("meta"):
            model = wrapper(cls(config), mean, std)
        return model, BackboneInfo(canonical, model.config.to_dict(), tokenizer_path=tokenizer or canonical)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Loading weights" bar in mwa's own progress display
    try:
        hf_model, loading = cls.from_pretrained(source, local_files_only=local, dtype=torch.float32,
                                                output_loading_info=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load the Hugging Face model {source}: {exc}") from None
    if wrapper is not HFDualEncoder and loading.get("missing_keys"):  # BLIP-2: never train on random heads
        missing = sorted(loading["missing_keys"])
        raise ConfigError(f"{source} lacks {len(missing)} weights of {cls.__name__} (e.g. {', '.join(missing[:3])})",
                          hint="give the directory of a complete image-text retrieval checkpoint "
                               "(Salesforce/blip2-itm-vit-g)")
    model = wrapper(hf_model, mean, std)
    if device is not None:
        model.to(device)
    sha = _weights_sha256(Path(source)) if local else None
    info = BackboneInfo(canonical, model.config.to_dict(), weights=None, weights_sha256=sha,
                        tokenizer_path=tokenizer or canonical,
                        extra={"model_type": config.model_type, "source": source, "image_mean": list(model.image_mean),
                               "image_std": list(model.image_std)})
    return model, info


def build_blip2_preset(weights: str | None = None, *, tokenizer: str | None = None,
                       device: torch.device | str | None = None):
    """``blip2-itm-vit-g``: random weights from the written config (``weights=None``: benchmarks, meta-device
    counts), or a local copy of the hub directory (``weights=DIR``: config checked, weights and tokenizer read)."""
    from transformers import Blip2ForImageTextRetrieval

    if weights is not None:
        folder = Path(weights).expanduser()
        if not folder.is_dir():
            raise ConfigError(f"--weights for {PRESET} must be the model directory (config.json, model.safetensors, "
                              f"tokenizer files), got {weights}",
                              hint="download Salesforce/blip2-itm-vit-g once (e.g. `hf download "
                                   "Salesforce/blip2-itm-vit-g --local-dir DIR`) and pass --weights DIR")
        from transformers import AutoConfig

        try:
            check_preset_layout(AutoConfig.from_pretrained(str(folder), local_files_only=True))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the config of {folder}: {exc}",
                              hint="pass the directory holding config.json and the weights") from None
        model, info = build_hf_backbone(f"{PREFIX}{folder}", tokenizer=tokenizer, device=device)
        return model, BackboneInfo(PRESET, info.config, weights=str(folder.resolve()),
                                   weights_sha256=info.weights_sha256, tokenizer_path=info.tokenizer_path,
                                   extra=info.extra)
    config = preset_config()
    with torch.device(device if device is not None else "cpu"):
        model = Blip2Retrieval(Blip2ForImageTextRetrieval(config))
    tok = f"{PREFIX}{tokenizer}" if tokenizer and Path(tokenizer).is_dir() else tokenizer  # a BERT tokenizer dir
    return model, BackboneInfo(PRESET, model.config.to_dict(), tokenizer_path=tok)
