"""One frozen backbone in memory for every line: each version's adapter is attached to a structural copy of the
backbone whose frozen tensors are the backbone's own (aliased, not copied), so N lines cost one backbone plus N
adapters, and a request for one line runs its own module tree: two lines can never mix adapters, and there is
nothing to swap in or out per request (docs/decisions.md, "One backbone for many lines").

The copy shares every parameter and buffer of the backbone except those the adapter file holds (trained heads,
the temperature): those are private copies before the adapter's weights are loaded into them, and a check after
loading refuses a version whose trained tensors would still be shared."""

from __future__ import annotations

import copy
import threading
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mwa_cli.errors import CheckpointError


def _alias_copy(base: nn.Module, private: set[str]) -> nn.Module:
    """A copy of `base`'s modules sharing all its parameters and buffers but those named in `private`."""
    memo: dict[int, Any] = {id(t): t for t in [*base.parameters(), *base.buffers()]}
    clone = copy.deepcopy(base, memo)
    for name, param in list(clone.named_parameters()):
        if name in private:
            owner, _, attr = name.rpartition(".")
            setattr(clone.get_submodule(owner) if owner else clone, attr,
                    nn.Parameter(param.detach().clone(), requires_grad=False))
    return clone


def adapter_tensor_names(folder: Path) -> set[str]:
    from safetensors import safe_open

    from mwa_cli.adapters.io import WEIGHTS_FILE

    with safe_open(str(folder / WEIGHTS_FILE), framework="pt") as fh:
        return set(fh.keys())


class SharedBackbones:
    """The backbones in memory, one per `backbone_key` (name, weights sha256, shape, seed of a random one), and
    the adapted models built on them (`model_for`)."""

    def __init__(self, device: str = "auto"):
        from mwa_cli.runtime import resolve_device

        self.device = resolve_device(device)
        self._bases: dict[str, tuple[nn.Module, Any]] = {}
        self._lock = threading.Lock()

    def base(self, key: dict[str, Any], source: str, weights: str | None, tokenizer: str | None
             ) -> tuple[nn.Module, Any]:
        """The frozen backbone for `key` (built once, as `load_run` builds it: the run's seed first)."""
        import json

        from mwa_cli.models.presets import build_backbone

        k = json.dumps(key, sort_keys=True)
        with self._lock:
            if k not in self._bases:
                torch.manual_seed(int(key.get("seed") or 0))
                model, info = build_backbone(source, weights, tokenizer=tokenizer)
                model.to(self.device).eval().requires_grad_(False)
                self._bases[k] = (model, info)
            return self._bases[k]

    def model_for(self, folder: str | Path, *, weights: str | None = None, tokenizer: str | None = None,
                  lock: threading.Lock | None = None) -> Any:
        """A SearchModel of the adapter in `folder` (a line version) on the shared backbone. `lock` is held while
        the adapter is attached (requests running on the backbone meanwhile never see a half-built copy)."""
        import contextlib

        from mwa_cli.adapters.io import load_adapter, read_adapter_config, verify_adapter_weights
        from mwa_cli.lines.runinfo import backbone_key
        from mwa_cli.models.run_tokenizer import load_tokenizer
        from mwa_cli.runs import read_run_config
        from mwa_cli.search.model import SearchModel, adapter_identity

        folder = Path(folder)
        _, cfg = read_adapter_config(folder)
        verify_adapter_weights(folder, cfg)
        run_cfg = read_run_config(folder)
        weights = weights or run_cfg.get("weights")
        tokenizer = tokenizer or run_cfg.get("tokenizer")
        name = cfg["backbone"]["name"]
        source = cfg["backbone"]["config"] if name.startswith("config:") else name
        base, info = self.base(backbone_key(cfg, run_cfg), source, weights, tokenizer)
        shared = {id(p) for p in base.parameters()}
        with lock or contextlib.nullcontext():
            clone = _alias_copy(base, adapter_tensor_names(folder))
            torch.manual_seed(int(run_cfg.get("seed", 0) or 0))
            model, applied, _ = load_adapter(folder, model=clone, info=info)
            leaked = [n for n, p in applied.trainable_named_parameters() if id(p) in shared]
            model.to(self.device).eval().requires_grad_(False)
        if leaked:  # pragma: no cover - a method that trains a backbone tensor its adapter file does not hold
            raise CheckpointError(f"{folder}: the adapter trains {leaked[:3]}, which would be shared by every line",
                                  hint="serve this run on its own with `mwa serve --index`")
        tok_path = tokenizer or getattr(info, "tokenizer_path", None)
        text_len = int(run_cfg.get("text_len") or model.config.text_len)
        return SearchModel(model=model, tokenizer=load_tokenizer(tok_path, text_len, model=model), info=info,
                           method=applied.name, run_dir=folder, identity=adapter_identity(folder),
                           device=self.device, weights=getattr(info, "weights", None) or weights,
                           tokenizer_path=tok_path)

    def memory(self) -> dict[str, int]:
        """Bytes of the backbones held (for /api/lines)."""
        return {"backbones": len(self._bases),
                "backbone_bytes": sum(sum(t.numel() * t.element_size() for t in [*m.parameters(), *m.buffers()])
                                      for m, _ in self._bases.values())}
