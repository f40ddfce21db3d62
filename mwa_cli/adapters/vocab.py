"""Vocabulary extension: new token ids for characters the backbone's tokenizer maps to ``<unk>``.

Why: BEiT-3's sentencepiece model (and the English-only one of ``beit3-mini``) lacks many characters of Japanese
inspection captions (傷, 穴, 錆, 溶接 ...). A caption whose key words are ``<unk>`` cannot be retrieved, however
good the adapter, so ``mwa train --extend-vocab`` gives those characters their own ids and trains their
embeddings together with the adapter.

* Unit: **single characters**. A character is selected when the tokenizer, given that character alone, produces
  ``<unk>`` (raw characters, before sentencepiece's NFKC normalisation, because added tokens are matched on the
  raw text). Words would need a segmenter for Japanese (no spaces), would split the budget of a small training set
  over many rare rows, and would leave every unseen compound ``<unk>`` at query time; characters are few (the
  2,136 jōyō kanji + kana cover almost everything), are shared between words (傷, 傷跡, 擦り傷), and a query
  written with other words made of the same characters still gets ids.
* Ids: from ``max(tokenizer.vocab_size, text_embed rows)`` up, so no new id collides with a row the backbone
  already has (BEiT-3 Base has 64,010 rows for 64,002 tokenizer ids).
* Weights: the backbone's ``text_embed`` keeps its shape and stays frozen. A second ``nn.Embedding`` is
  registered as ``beit3.text_embed.extension`` (one row per new token) and two hooks on ``text_embed`` route ids
  ≥ base to it (pre-hook: such ids are looked up as ``<unk>`` in the base table; forward hook: their rows are
  replaced by the extension's). Captions without new tokens give bit-identical embeddings.
* Init ``mean`` (default): every new row starts as the mean of the tokenizer's ordinary rows (ids 4 .. tokenizer
  size). Sub-piece init is not possible here: an unknown character has no sub-pieces (its only piece is
  ``<unk>``). On a trained table the mean row is small (norm 0.014 vs 0.78 for a typical beit3-mini row), so a new
  token starts as a near-neutral input that reads as no known word. ``sample`` (a normal with the rows' mean and
  covariance, as Hugging Face's ``resize_token_embeddings`` does) makes every new token distinct from step 0 but
  as a random known-looking word; on sample_data it reached a lower RSUM after one epoch (84.1 vs 148.9 with
  ``mean`` at lr 2e-2 / rows 5e-3; 223.9 vs 265.9 at lr 2e-4 / rows 5e-3), so ``mean`` is the default.
  ``unk`` copies the ``<unk>`` row.
* Learning rate: `mwa train` gives the new rows a peak lr of their own (``extend_vocab_lr``, 2e-2; the same
  warm-up + cosine shape), stored as ``lr_scale`` = that / the method's lr: the rows start from nothing and need
  steps of the size of their entries (≈ 0.06), whatever rate the method's zero-initialised adapter prefers. When
  the extension is on and no ``--lr`` is given, a default method lr above 2e-3 is capped at 2e-3 (and said):
  on sample_data the beit3-mini mwa default 2e-2 let the adapter fit the still-meaningless Japanese text first
  (test RSUM 187.5 vs 308.0 at 2e-3; English: 237.5 at 2e-2, 228.4 at 2e-3). Numbers: docs/benchmarks.md.

The token table is stored in ``adapter_config.json`` ``token_additions``:
``{"base_vocab_size": 2816, "tokens": {"傷": 2816, ...}, "unit": "char", "init": "mean", "lr_scale": 10.0, "lr": 0.02}``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
from torch import Tensor, nn

from mwa_cli.errors import CheckpointError, ConfigError
from mwa_cli.models.tokenizer import UNK_ID

MODES = ("auto", "on", "off")
DEFAULT_THRESHOLD = 0.02  # auto: extend when more than 2 % of the training captions' tokens are <unk>
MAX_NEW_TOKENS = 8192
INITS = ("mean", "sample", "unk")
DEFAULT_INIT = "mean"
DEFAULT_LR_SCALE = 1.0
DEFAULT_PEAK_LR = 2e-2  # `mwa train`: peak lr of the new rows, whatever the method's lr (docs/benchmarks.md)
MAX_DEFAULT_METHOD_LR = 2e-3  # with an extension, a default (not user-given) method lr above this is capped
EXTENSION_NAME = "extension"
FIRST_ORDINARY_ID = 4  # <s> <pad> </s> <unk> come first


# ------------------------------------------------------------------------------------------------ selection
def unknown_characters(tokenizer, texts: Iterable[str]) -> Counter:
    """Counts of the raw characters of ``texts`` that the tokenizer maps to ``<unk>`` on their own
    (characters already in the tokenizer's added tokens are not counted)."""
    verdict: dict[str, bool] = {}
    counts: Counter[str] = Counter()
    added = getattr(tokenizer, "added_tokens", {}) or {}
    for text in texts:
        for ch in str(text):
            if ch.isspace() or ch in added:
                continue
            unk = verdict.get(ch)
            if unk is None:
                unk = verdict[ch] = UNK_ID in tokenizer._sp_ids(ch)
            if unk:
                counts[ch] += 1
    return counts


def select_new_tokens(tokenizer, texts: Iterable[str], *, min_count: int = 1,
                      max_tokens: int = MAX_NEW_TOKENS) -> list[str]:
    """The characters to add, most frequent first (ties: code point order), so the choice is deterministic."""
    counts = unknown_characters(tokenizer, texts)
    chosen = [ch for ch, n in counts.items() if n >= min_count]
    chosen.sort(key=lambda ch: (-counts[ch], ch))
    return chosen[:max_tokens]


def first_new_id(tokenizer, model: nn.Module | None = None) -> int:
    """New ids start after both the tokenizer's ids and the backbone's embedding rows."""
    rows = int(model.beit3.text_embed.num_embeddings) if model is not None else 0
    return max(int(tokenizer.vocab_size), rows)


def make_table(tokens: list[str], base: int, init: str = DEFAULT_INIT,
               lr_scale: float = DEFAULT_LR_SCALE, lr: float | None = None) -> dict[str, Any]:
    """The ``token_additions`` record: ``{"base_vocab_size", "tokens": {token: id}, "unit", "init", "lr_scale"}``."""
    if init not in INITS:
        raise ConfigError(f"unknown vocabulary-extension init {init!r}", hint=f"choose one of {', '.join(INITS)}")
    if not lr_scale > 0:
        raise ConfigError(f"the vocabulary-extension lr scale must be positive, not {lr_scale!r}")
    table = {"base_vocab_size": int(base), "tokens": {t: base + i for i, t in enumerate(tokens)},
             "unit": "char", "init": init, "lr_scale": float(lr_scale)}
    if lr is not None:
        table["lr"] = float(lr)
    return table


def added_tokens_from(token_additions: Any) -> dict[str, int] | None:
    """``{token: id}`` of a ``token_additions`` record (or of a bare ``{token: id}`` dict); None when empty."""
    if not isinstance(token_additions, dict):
        return None
    table = token_additions.get("tokens", token_additions.get("added_tokens", token_additions))
    if isinstance(table, dict) and table and all(isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
                                                 for k, v in table.items()):
        return dict(table)
    return None


@dataclass
class ExtensionPlan:
    """What `mwa train --extend-vocab` decided, and why (printed and stored in config.json)."""

    mode: str
    enabled: bool
    reason: str
    unknown_fraction: float
    tokens: list[str] = field(default_factory=list)
    top: list[tuple[str, int]] = field(default_factory=list)


def plan_extension(tokenizer, texts: list[str], mode: str = "auto", *, threshold: float = DEFAULT_THRESHOLD,
                   trains: bool = True) -> ExtensionPlan:
    """Decide whether to extend the vocabulary for training captions ``texts`` (``mode``: auto | on | off)."""
    if mode not in MODES:
        raise ConfigError(f"--extend-vocab must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "off":
        return ExtensionPlan(mode, False, "vocabulary extension off (--extend-vocab off)", 0.0)
    rep = tokenizer.unknown_report(texts, top=10)
    frac = float(rep["unknown_fraction"])
    pct = f"{100 * frac:.1f} % of the training captions' tokens are <unk>"
    if not trains:
        return ExtensionPlan(mode, False, f"vocabulary extension off: this method trains nothing ({pct})", frac)
    tokens = select_new_tokens(tokenizer, texts)
    counts = unknown_characters(tokenizer, texts)
    top = [(t, counts[t]) for t in tokens[:10]]
    if not tokens:
        return ExtensionPlan(mode, False, f"vocabulary extension off: no unknown characters ({pct})", frac, [], [])
    if mode == "auto" and frac <= threshold:
        return ExtensionPlan(mode, False, f"vocabulary extension off (auto): {pct}, not above the "
                             f"{100 * threshold:g} % threshold (--extend-vocab on forces it)", frac, [], top)
    why = "--extend-vocab on" if mode == "on" else f"auto: above the {100 * threshold:g} % threshold"
    return ExtensionPlan(mode, True, f"vocabulary extension on ({why}): {pct}", frac, tokens, top)


# ------------------------------------------------------------------------------------------------ the module
class TextEmbeddingExtension(nn.Embedding):
    """Rows for ids ``base .. base + n - 1``, attached to ``text_embed`` through two hooks."""

    def __init__(self, base: int, num_tokens: int, dim: int, table: dict[str, Any] | None = None):
        super().__init__(num_tokens, dim)
        self.base = int(base)
        self.table = table
        self._ids: Tensor | None = None

    def attach(self, text_embed: nn.Embedding) -> None:
        text_embed.add_module(EXTENSION_NAME, self)
        text_embed.register_forward_pre_hook(self._pre_hook)
        text_embed.register_forward_hook(self._post_hook)

    def _pre_hook(self, _module: nn.Module, args: tuple):
        ids = args[0]
        self._ids = ids
        return (torch.where(ids >= self.base, torch.full_like(ids, UNK_ID), ids), *args[1:])

    def _post_hook(self, _module: nn.Module, _args: tuple, out: Tensor) -> Tensor:
        ids, self._ids = self._ids, None
        if ids is None:
            return out
        new = ids >= self.base
        rows = super().forward((ids - self.base).clamp(0, self.num_embeddings - 1))
        return torch.where(new.unsqueeze(-1), rows.to(out.dtype), out)


def get_extension(model: nn.Module) -> TextEmbeddingExtension | None:
    text_embed = getattr(getattr(model, "beit3", None), "text_embed", None)  # None on hf: two-tower backbones
    ext = getattr(text_embed, EXTENSION_NAME, None)
    return ext if isinstance(ext, TextEmbeddingExtension) else None


def extension_table(model: nn.Module) -> dict[str, Any] | None:
    """The ``token_additions`` record of the model's extension (None without one)."""
    ext = get_extension(model)
    return ext.table if ext is not None else None


def attach_extension(model: nn.Module, table: dict[str, Any], applied=None, *, tokenizer_size: int | None = None
                     ) -> TextEmbeddingExtension:
    """Attach a trainable extension for ``table`` (from `make_table` or an adapter_config) to ``model``.

    Call after `apply_method` (which freezes everything it did not add): the extension's weight gets
    ``requires_grad`` and is registered with ``applied`` as a new parameter (full learning rate, counted in the
    trainable parameters, saved by `save_adapter`, checkpointed with the other trainables).
    """
    tokens = added_tokens_from(table) or {}
    if not tokens:
        raise ConfigError("empty vocabulary extension table")
    if get_extension(model) is not None:
        raise ConfigError("this model already has a vocabulary extension")
    base = int(table.get("base_vocab_size", min(tokens.values())))
    n = max(tokens.values()) - base + 1
    text_embed = model.beit3.text_embed
    if base < text_embed.num_embeddings or min(tokens.values()) < base:
        raise CheckpointError(f"vocabulary extension ids start at {base}, inside the backbone's "
                              f"{text_embed.num_embeddings} embedding rows", hint="the token table does not belong "
                              "to this backbone")
    weight = text_embed.weight
    ext = TextEmbeddingExtension(base, n, int(weight.shape[1]), table=dict(table)).to(weight.device, weight.dtype)
    hi = min(int(tokenizer_size or text_embed.num_embeddings), text_embed.num_embeddings)
    with torch.no_grad():
        ext.weight.copy_(initial_rows(weight, n, str(table.get("init", DEFAULT_INIT)), hi))
    ext.attach(text_embed)
    ext.weight.requires_grad_(True)
    if applied is not None:
        names = {n for n, p in model.named_parameters() if p is ext.weight}
        applied.new_param_names = set(applied.new_param_names) | names
        applied.lr_scales.update({n: float(table.get("lr_scale", DEFAULT_LR_SCALE)) for n in names})
    return ext


def initial_rows(weight: Tensor, n: int, init: str, hi: int) -> Tensor:
    """``n`` initial rows from the base embedding table's ordinary rows ``4 .. hi - 1``.

    ``mean`` (default): all rows = the mean row; ``sample``: drawn from a normal with the rows' mean and covariance
    (as Hugging Face's ``resize_token_embeddings`` does), with a fixed generator, so every new token starts
    distinct with a typical norm; ``unk``: all rows = the ``<unk>`` row."""
    if init == "unk":
        return weight[UNK_ID].detach().expand(n, -1).clone()
    rows = weight[FIRST_ORDINARY_ID:max(FIRST_ORDINARY_ID + 2, hi)].detach().double().cpu()
    mean = rows.mean(0)
    if init == "mean":
        return mean.to(weight.dtype).expand(n, -1).clone().to(weight.device)
    centred = rows - mean
    cov = centred.T @ centred / max(1, rows.shape[0] - 1)
    cov = cov + 1e-9 * torch.eye(cov.shape[0], dtype=cov.dtype) * cov.diagonal().mean()
    chol = torch.linalg.cholesky(cov)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(n, cov.shape[0], generator=g, dtype=torch.float64)
    return (mean + z @ chol.T).to(weight.dtype).to(weight.device)


def extension_params(model: nn.Module) -> int:
    ext = get_extension(model)
    return ext.weight.numel() if ext is not None else 0


def describe(model: nn.Module) -> str:
    """One line on the extension's size and cost, for the training output."""
    ext = get_extension(model)
    if ext is None:
        return "no vocabulary extension"
    table = ext.table or {}
    rate = f"peak lr {table['lr']:g}" if "lr" in table else f"lr × {table.get('lr_scale', 1.0):g}"
    last = ext.base + ext.num_embeddings - 1
    return (f"{ext.num_embeddings} new tokens (single characters, ids {ext.base}–{last}, init {table.get('init')}, "
            f"{rate}): {ext.weight.numel():,} trainable parameters ({ext.embedding_dim} per token), saved with the "
            "adapter")


def setup_for_training(model: nn.Module, applied, tokenizer, captions: list[str], mode: str = "auto", *,
                       resumed: dict[str, Any] | None = None, resuming: bool = False,
                       threshold: float = DEFAULT_THRESHOLD, init: str = DEFAULT_INIT,
                       peak_lr: float | None = None, lr_scale: float = DEFAULT_LR_SCALE,
                       method_lr: float | None = None, default_lr: float | None = None
                       ) -> tuple[dict[str, Any] | None, list[str], dict, float | None]:
    """`mwa train`'s step: decide, attach the extension (before the optimizer is built) and say so.

    ``peak_lr``: the new rows' own peak lr (``lr_scale`` = peak_lr / the method's lr); ``method_lr`` is the
    user's lr (None: ``default_lr`` is used, capped at MAX_DEFAULT_METHOD_LR when the extension is on).
    Returns (token table or None, lines to print, a record for config.json, the method lr to use instead or
    None). A resumed run re-attaches the table its config.json recorded (the decision is not taken again)."""
    trains = applied is not None and applied.name != "frozen"
    new_lr = None
    supported = hasattr(tokenizer, "_sp_ids") and hasattr(getattr(model, "beit3", None), "text_embed")
    if not supported:  # e.g. Hugging Face two-tower backbones: their own tokenizer and embeddings
        why = f"vocabulary extension off: not supported for this backbone (--extend-vocab {mode})"
        return None, ([why] if mode == "on" else []), {"mode": mode, "enabled": False, "reason": why}, None
    if resuming:
        table = resumed if added_tokens_from(resumed) else None
        record = {"mode": mode, "enabled": table is not None, "reason": "resumed run: same table as before"}
        notes = []
    else:
        plan = plan_extension(tokenizer, captions, mode, threshold=threshold, trains=trains)
        record = {"mode": mode, "enabled": plan.enabled, "reason": plan.reason,
                  "unknown_fraction": round(plan.unknown_fraction, 6), "threshold": threshold}
        notes = [plan.reason]
        table = None
        if plan.enabled:
            lr = method_lr
            if lr is None and default_lr is not None:
                lr = default_lr
                if default_lr > MAX_DEFAULT_METHOD_LR:
                    lr = new_lr = MAX_DEFAULT_METHOD_LR
                    record["method_lr_capped_from"] = default_lr
                    notes.append(f"learning rate {new_lr:g} instead of the default {default_lr:g}: with new tokens "
                                 "that start untrained, a fast adapter fits the still-meaningless text first "
                                 "(docs/benchmarks.md); --lr sets it")
            if peak_lr is not None and lr:
                lr_scale = peak_lr / lr
            table = make_table(plan.tokens, first_new_id(tokenizer, model), init, lr_scale, peak_lr)
        elif plan.top and plan.unknown_fraction > 0:
            notes[0] += "; unknown: " + " ".join(f"{t}×{n}" for t, n in plan.top)
    if table is not None:
        attach_extension(model, table, applied, tokenizer_size=int(tokenizer.base_vocab_size))
        record.update(tokens=len(added_tokens_from(table) or {}), params=extension_params(model))
        if not resuming:
            notes.append(describe(model))
    return table, notes, record, new_lr
