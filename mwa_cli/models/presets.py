"""Named backbones and the one function that builds them: ``build_backbone``."""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from mwa_cli.errors import EXIT_USAGE, ConfigError
from mwa_cli.models.base import BackboneInfo
from mwa_cli.models.beit3 import BEiT3Config, BEiT3Retrieval
from mwa_cli.models.checkpoint import DEFAULT_CACHE, download, is_url, load_backbone_weights
from mwa_cli.models.sources import NO_WEIGHTS, TOKENIZER_URL, WEIGHTS_URLS, random_on_purpose
from mwa_cli.resources import MINI_MODEL, package_path
from mwa_cli.safe_open import InputFileError, load_json

MINI_DIR = package_path(MINI_MODEL)

PRESETS: dict[str, dict[str, Any]] = {
    "beit3-base": dict(embed_dim=768, depth=12, num_heads=12, ffn_dim=3072),
    "beit3-large": dict(embed_dim=1024, depth=24, num_heads=16, ffn_dim=4096),
    "beit3-base-384": dict(embed_dim=768, depth=12, num_heads=12, ffn_dim=3072, img_size=384),
    "beit3-large-384": dict(embed_dim=1024, depth=24, num_heads=16, ffn_dim=4096, img_size=384),
    # Random tiny model for tests (uses the built-in English tokenizer).
    "beit3-tiny-test": dict(img_size=32, patch_size=8, vocab_size=8192, embed_dim=64, depth=2, num_heads=4,
                            ffn_dim=256, text_len=32),
}
MINI = "beit3-mini"
TEST_PRESETS = ("beit3-tiny-test",)  # random by design: for tests, never offered to users
BLIP2_PRESETS = ("blip2-itm-vit-g",)  # Hugging Face layouts built from a written config (mwa_cli.models.blip2)

def needs_weights(name: str) -> bool:
    """True for a backbone that is useful only with pretrained weights the user must supply."""
    return name != MINI and name not in TEST_PRESETS and not name.startswith(("config:", "hf:"))


def weights_hint(name: str) -> str:
    """Where to get a backbone's weights (and BEiT-3's tokenizer), for messages and `mwa doctor`."""
    url = WEIGHTS_URLS.get(name.replace("-384", ""))
    if url:
        return (f"download {url} and pass --weights PATH (or the address itself: it is downloaded once), with "
                f"the tokenizer beit3.spm from {TOKENIZER_URL} beside it or as --tokenizer PATH")
    return "pass --weights with the backbone's pretrained weights (a file, a folder for hf:, or an address)"


def require_weights(name: str, weights: str | None) -> str | None:
    """The weights to build `name` with: refuses a backbone that needs weights when none are given, so a random
    model is never trained or evaluated by accident; `--weights none` asks for one by name (returns NO_WEIGHTS,
    which `build_backbone` builds randomly initialised)."""
    if random_on_purpose(weights):
        return NO_WEIGHTS
    if weights is None and needs_weights(name):
        raise ConfigError(f"no pretrained weights for {name}: without them it is a random model that knows nothing",
                          hint=weights_hint(name) + f"; or --weights {NO_WEIGHTS} to train it from random on purpose")
    return weights


def preset_names() -> list[str]:
    """The backbones offered to users (test presets are left out)."""
    return [*(n for n in PRESETS if n not in TEST_PRESETS), MINI, *BLIP2_PRESETS]


def _mini_files() -> tuple[Path, Path, Path]:
    return MINI_DIR / "config.json", MINI_DIR / "weights.safetensors", MINI_DIR / "tokenizer.spm"


def find_tokenizer(name: str, weights: str | None, tokenizer: str | None) -> str | None:
    """The tokenizer to use: explicit path, else built-in for small models, else beit3.spm found nearby."""
    if tokenizer:
        return str(tokenizer)
    if name == MINI or name == "beit3-tiny-test" or name.startswith("config:"):
        path = _mini_files()[2]
        return str(path) if path.is_file() else None
    candidates = [os.environ.get("MWA_BEIT3_SPM", "")]
    if weights and not is_url(weights):
        candidates.append(str(Path(weights).with_name("beit3.spm")))
    candidates.append(str(DEFAULT_CACHE / "beit3.spm"))
    return next((c for c in candidates if c and Path(c).is_file()), None)


def resolve_config(name_or_config: str | dict[str, Any]) -> tuple[str, BEiT3Config]:
    """A preset name, a path to a config JSON, or a config dict -> (name, config)."""
    if isinstance(name_or_config, dict):
        return "config:custom", BEiT3Config.from_dict(name_or_config)
    name = str(name_or_config)
    if name == MINI:
        cfg_path = _mini_files()[0]
        if not cfg_path.is_file():
            raise ConfigError("the built-in beit3-mini weights are not installed",
                              hint="regenerate them with scripts/pretrain_mini.py or reinstall mwa")
        return name, BEiT3Config.from_dict(json.loads(cfg_path.read_text()))
    if name in PRESETS:
        return name, BEiT3Config.from_dict(PRESETS[name])
    if name.endswith(".json") and Path(name).is_file():
        try:
            data = load_json(name, what="backbone config", exit_code=EXIT_USAGE)
        except InputFileError as exc:
            raise ConfigError(exc.message,
                              hint='a JSON object of BEiT-3 config keys, e.g. {"embed_dim": 768}') from None
        if not isinstance(data, dict):
            raise ConfigError(f"backbone config {name} holds {type(data).__name__}, not an object of config keys")
        return f"config:{Path(name).name}", BEiT3Config.from_dict(data)
    raise ConfigError(f"unknown backbone {name!r}",
                      hint=f"use one of {', '.join(preset_names())}, or a path to a config .json")


def build_backbone(
    name_or_config: str | dict[str, Any],
    weights: str | None = None,
    *,
    drop_path: float = 0.0,
    tokenizer: str | None = None,
    device: torch.device | str | None = None,
) -> tuple[BEiT3Retrieval, BackboneInfo]:
    """Build a backbone and load its weights (built-in for beit3-mini; ``weights`` path or URL otherwise).

    Builds on the meta device when ``device == "meta"`` (for parameter counting; no weights loaded).
    ``weights == "none"`` (`--weights none`) builds it randomly initialised, also for beit3-mini. A randomly
    initialised backbone is drawn on the CPU (then moved to ``device``): the same seed gives the same weights on
    every machine, so the final evaluation, `mwa eval` and `mwa index` rebuild exactly the backbone a run trained on.
    ``hf:<model id or dir>`` builds a transformers CLIP/SigLIP two-tower model (``mwa_cli.models.hf``) or a BLIP-2
    retrieval model; ``blip2-itm-vit-g`` the official BLIP-2 retrieval layout (both: ``mwa_cli.models.hf_build``).
    """
    t0 = time.monotonic()
    model, info = _build(name_or_config, weights, drop_path=drop_path, tokenizer=tokenizer, device=device)
    info.random_weights = random_on_purpose(weights)
    info.build_s = time.monotonic() - t0
    return model, info


def _build(name_or_config: str | dict[str, Any], weights: str | None, *, drop_path: float, tokenizer: str | None,
           device: torch.device | str | None) -> tuple[Any, BackboneInfo]:
    random = random_on_purpose(weights)
    if random:
        weights = None
    if isinstance(name_or_config, str) and name_or_config.startswith("hf:"):
        from mwa_cli.models.hf_build import build_hf_backbone

        if random:
            raise ConfigError(f"--weights {NO_WEIGHTS} cannot apply to {name_or_config}: a Hugging Face backbone is "
                              "always built from its own pretrained files", hint="leave --weights out")
        return build_hf_backbone(name_or_config, weights, tokenizer=tokenizer, device=device)
    if isinstance(name_or_config, str) and name_or_config in BLIP2_PRESETS:
        from mwa_cli.models.hf_build import build_blip2_preset

        meta = str(device) == "meta"  # sizes only: the written config, no weights read
        return build_blip2_preset(None if meta else weights, tokenizer=tokenizer, device=device)
    name, cfg = resolve_config(name_or_config)
    cfg.drop_path = drop_path
    if str(device) == "meta":
        with torch.device("meta"):
            return BEiT3Retrieval(cfg), BackboneInfo(name, cfg.to_dict())
    if weights is None and name == MINI and not random:
        weights = str(_mini_files()[1])
    # weights to load: initialised where it will run (fast on a GPU); random: on the CPU, the same on every machine
    on_cpu = weights is None
    with torch.device(device) if device is not None and not on_cpu else contextlib.nullcontext():
        model = BEiT3Retrieval(cfg)
    sha = None
    if weights is None:
        if device is not None:
            model.to(device)
    else:
        local = download(weights) if is_url(weights) else Path(weights)
        sha = load_backbone_weights(model, local)
        weights = str(local)
    return model, BackboneInfo(name, cfg.to_dict(), weights, sha, find_tokenizer(name, weights, tokenizer))
