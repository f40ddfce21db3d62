"""The search space of one method on one backbone and data dir: the options that trade time for recall.

* adapter methods (mwa, nke, lora): adapted layers (``all`` or ``top-K``, K a quarter to three quarters of the
  depth), the feature cache with ``top-K`` (BEiT-3), NKE rank / LoRA rank, MWA's AE width;
* full-ft: layer-wise lr decay;
* every method: the learning rate (log scale, a quarter to four times the method's default for this backbone and
  these captions) and the batch size (half, once and twice the default; the trainer backs off to micro-batches
  when a batch does not fit in GPU memory).

`first_params` are the trials every study starts with (the defaults, then for layered methods the top half from
the feature cache), so the search always measures what `mwa train` would do without it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mwa_cli.errors import ConfigError

LR_FACTOR = 4.0  # the lr range: default / LR_FACTOR … default * LR_FACTOR
TOP_FRACTIONS = (1 / 4, 1 / 3, 1 / 2, 2 / 3, 3 / 4)  # of the depth: the top-K candidates
LAYER_DECAYS = (0.65, 0.75, 0.85)  # full fine-tuning's candidates (0.65: BEiT-3's recipe, the default)


@dataclass(frozen=True)
class SearchSpace:
    """Choices per option; an empty tuple: the option is not searched (the method lacks it, or one value only)."""

    method: str
    lr_default: float
    batch_default: int
    batch_sizes: tuple[int, ...]
    depth: int = 0  # the backbone's layers (BEiT-3; 0 when the top-K choice is not offered)
    layers: tuple[str, ...] = ()
    cache: bool = False  # top-K trials may train from the feature cache
    ranks: tuple[int | str, ...] = ()
    ae_widths: tuple[int | str, ...] = ()
    layer_decays: tuple[float, ...] = ()

    @property
    def lr_range(self) -> tuple[float, float]:
        return self.lr_default / LR_FACTOR, self.lr_default * LR_FACTOR

    def suggest(self, trial: Any) -> dict[str, Any]:
        """One configuration drawn by an Optuna trial (its params, in Optuna's names)."""
        p: dict[str, Any] = {}
        if self.layers:
            p["layers"] = trial.suggest_categorical("layers", self.layers)
        if self.cache and p.get("layers", "all") != "all":
            p["feature_cache"] = trial.suggest_categorical("feature_cache", ("off", "auto"))
        if self.ranks:
            p["rank"] = trial.suggest_categorical("rank", self.ranks)
        if self.ae_widths:
            p["ae_width"] = trial.suggest_categorical("ae_width", self.ae_widths)
        if self.layer_decays:
            p["layer_decay"] = trial.suggest_categorical("layer_decay", self.layer_decays)
        p["lr"] = trial.suggest_float("lr", *self.lr_range, log=True)
        if len(self.batch_sizes) > 1:
            p["batch_size"] = trial.suggest_categorical("batch_size", self.batch_sizes)
        return p

    def first_params(self) -> list[dict[str, Any]]:
        """The configurations enqueued first (never pruned): the defaults; the top half from the feature cache when
        offered."""
        default: dict[str, Any] = {"lr": self.lr_default}
        if len(self.batch_sizes) > 1:
            default["batch_size"] = self.batch_default
        for key, choices in (("layers", self.layers), ("rank", self.ranks), ("ae_width", self.ae_widths),
                             ("layer_decay", self.layer_decays)):
            if choices:
                default[key] = choices[0]  # the first choice is the method's default
        out = [default]
        tops = [x for x in self.layers if x != "all"]
        if self.cache and tops:
            half = min(tops, key=lambda x: abs(int(x[4:]) - self.depth / 2))
            out.append(dict(default, layers=half, feature_cache="auto"))
        return out

    def train_values(self, params: dict[str, Any]) -> dict[str, Any]:
        """The TrainConfig values of a configuration (params as `suggest` returns them)."""
        options = {k: params[k] for k in ("layers", "rank", "ae_width") if k in params}
        values: dict[str, Any] = {"method": self.method, "method_options": options, "lr": float(params["lr"]),
                                  "batch_size": int(params.get("batch_size", self.batch_default)),
                                  "feature_cache": params.get("feature_cache", "off")}
        if "layer_decay" in params:
            values["layer_decay"] = float(params["layer_decay"])
        return values

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "lr_range": list(self.lr_range)}


def describe(params: dict[str, Any]) -> str:
    """A configuration in a few words: "top-2 cache r8 ae48 lr 4.1e-3 b32" (defaults — auto — left out)."""
    parts = []
    if "layers" in params:
        parts.append(str(params["layers"]))
    if params.get("feature_cache", "off") != "off":
        parts.append("cache")
    for key, short in (("rank", "r"), ("ae_width", "ae"), ("layer_decay", "ld")):
        if key in params and params[key] != "auto":
            parts.append(f"{short}{params[key]:g}" if isinstance(params[key], float) else f"{short}{params[key]}")
    if "lr" in params:
        parts.append(f"lr {params['lr']:.1e}".replace("e-0", "e-"))
    if "batch_size" in params:
        parts.append(f"b{params['batch_size']}")
    return " ".join(parts)


def top_choices(depth: int) -> tuple[str, ...]:
    """("all", "top-K", …) for a backbone of `depth` layers: K a quarter to three quarters of the depth."""
    ks = sorted({max(1, min(depth - 1, round(f * depth))) for f in TOP_FRACTIONS} - {depth})
    return ("all", *(f"top-{k}" for k in ks)) if depth > 1 else ("all",)


def _unique(values: list) -> tuple:
    out: list = []
    for v in values:
        if v not in out:
            out.append(v)
    return tuple(out)


def batch_choices(default: int, pairs: int) -> tuple[int, ...]:
    """Half, once and twice the default batch, capped at the training pairs (default first)."""
    cap = max(1, pairs)
    return _unique([min(default, cap), *(min(b, cap) for b in (max(1, default // 2), default * 2))])


def _beit3_shape(backbone: str) -> tuple[int, int, Any] | None:
    """(depth, width, a parameter-count-only model) of a BEiT-3 backbone; None for other families."""
    import torch

    from mwa_cli.models.beit3 import BEiT3Retrieval
    from mwa_cli.models.presets import resolve_config

    try:
        _, cfg = resolve_config(backbone)
    except ConfigError:  # hf:, blip2-…: layer selections per tower, no feature cache
        return None
    with torch.device("meta"):  # no memory, no weights: only the parameter count for AE width auto
        model = BEiT3Retrieval(cfg)
    return int(cfg.depth), int(cfg.embed_dim), model


def _extends_vocab(fixed: dict[str, Any], backbone: str, captions: list[str]) -> bool:
    """Will the trials extend the vocabulary (`--extend-vocab`, auto: many <unk> tokens in the train captions)?"""
    from mwa_cli.adapters.vocab import plan_extension
    from mwa_cli.models.presets import find_tokenizer, resolve_config
    from mwa_cli.models.run_tokenizer import load_tokenizer

    mode = fixed.get("extend_vocab", "auto")
    if mode == "off":
        return False
    path = find_tokenizer(backbone, fixed.get("weights"), fixed.get("tokenizer"))
    if path is None:  # no tokenizer found: the trials will say so; nothing to decide here
        return False
    text_len = int(fixed.get("text_len") or resolve_config(backbone)[1].text_len)
    return plan_extension(load_tokenizer(path, text_len), captions, mode).enabled


def build_space(method: str, fixed: dict[str, Any], data_dir: Path) -> SearchSpace:
    """The search space of `method` with the trials' fixed training values on the prepared `data_dir`."""
    from mwa_cli.adapters.methods.mwa import auto_ae_width, auto_rank
    from mwa_cli.adapters.registry import recommended_lr, resolve_options
    from mwa_cli.data.manifest import load_manifest
    from mwa_cli.runtime import resolve_device
    from mwa_cli.train.config import TrainConfig
    from mwa_cli.train.positives import resolve_positives
    from mwa_cli.train.setup import default_batch_size

    df = load_manifest(data_dir)
    train = df[df["split"] == "train"]
    positives = resolve_positives(fixed.get("positives", "auto"), list(train["caption"]),
                                  [str(x or "") for x in train["label"]])
    backbone = str(fixed.get("backbone", TrainConfig.backbone))
    lr = recommended_lr(backbone, method, templated=positives.templated)
    batch = default_batch_size(resolve_device(fixed.get("device", "auto")))
    options = resolve_options(method, None)
    shape = _beit3_shape(backbone)
    space: dict[str, Any] = {"method": method, "lr_default": lr, "batch_default": min(batch, max(1, len(train))),
                             "batch_sizes": batch_choices(batch, len(train))}
    if "layers" in options and shape is not None:
        space["depth"], space["layers"] = shape[0], top_choices(shape[0])
        # the feature cache needs every layer below the adapters frozen: not with new token embeddings
        space["cache"] = len(space["layers"]) > 1 and not _extends_vocab(fixed, backbone, list(train["caption"]))
    if "rank" in options:
        if options["rank"] == "auto" and shape is not None:
            r = auto_rank(shape[1])
            space["ranks"] = _unique(["auto", max(4, r // 2), 2 * r])
        elif isinstance(options["rank"], int):
            r = options["rank"]
            space["ranks"] = _unique([r, max(1, r // 2), 2 * r])
    if "ae_width" in options and shape is not None:
        width = auto_ae_width(shape[2], shape[0], auto_rank(shape[1]))  # auto's width with every layer adapted
        space["ae_widths"] = _unique(["auto", width, max(16, width // 2 // 16 * 16)])
    if method == "full-ft":
        space["layer_decays"] = _unique([TrainConfig.layer_decay, *LAYER_DECAYS])
    if not math.isfinite(lr) or lr <= 0:  # pragma: no cover - the registry's rates are positive
        raise ConfigError(f"no usable default learning rate for {method} on {backbone}")
    return SearchSpace(**space)
