"""Alignment Enhancer (AE): one residual block per layer, shared by both modalities, after the FFN.

``out = y + DropPath(fc2(LN(GELU(fc1(y)))))``, no LayerNorm before it, as in the official code. The hidden
width is a parameter: the official code uses the full FFN width (``paper-code``), which adds 25-30 % of the
backbone's parameters; the default here keeps NKE + AE within 3 %. ``fc2`` starts at zero by default so the
adapted model equals the backbone before training (``paper-code`` keeps the official trunc-normal init).
``SharedCoreAE`` is the variant for two towers of different widths (CLIP: vision 768, text 512).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class AlignmentEnhancer(nn.Module):
    """Shared d -> w -> d block with sub-LN, added as an extra residual branch."""

    def __init__(self, dim: int, width: int, eps: float, zero_init: bool = True):
        super().__init__()
        self.fc1 = nn.Linear(dim, width)
        self.ffn_layernorm = nn.LayerNorm(width, eps=eps)
        self.fc2 = nn.Linear(width, dim)
        for lin in (self.fc1, self.fc2):
            nn.init.trunc_normal_(lin.weight, std=0.02)
            nn.init.zeros_(lin.bias)
        if zero_init:
            nn.init.zeros_(self.fc2.weight)

    def forward(self, y: Tensor) -> Tensor:
        x = self.fc1(y)
        x = F.gelu(x.float()).type_as(x)
        return self.fc2(self.ffn_layernorm(x))


class SharedCoreAE(nn.Module):
    """AE for towers of different widths: per-tower ``proj_in`` (d_t -> w) and ``proj_out`` (w -> d_t) around a
    shared core ``GELU -> LN(w) -> Linear(w, w) -> GELU``; ``proj_out`` zero-initialised (step-0 identity)."""

    def __init__(self, dims: dict[str, int], width: int, eps: float, zero_init: bool = True):
        super().__init__()
        self.proj_in = nn.ModuleDict({t: nn.Linear(d, width) for t, d in dims.items()})
        self.ffn_layernorm = nn.LayerNorm(width, eps=eps)
        self.core = nn.Linear(width, width)
        self.proj_out = nn.ModuleDict({t: nn.Linear(width, d) for t, d in dims.items()})
        for lin in [*self.proj_in.values(), self.core, *self.proj_out.values()]:
            nn.init.trunc_normal_(lin.weight, std=0.02)
            nn.init.zeros_(lin.bias)
        if zero_init:
            for lin in self.proj_out.values():
                nn.init.zeros_(lin.weight)

    def forward(self, y: Tensor, tower: str) -> Tensor:
        x = self.proj_in[tower](y)
        x = self.ffn_layernorm(F.gelu(x.float()).type_as(x))
        x = self.core(x)
        x = F.gelu(x.float()).type_as(x)
        return self.proj_out[tower](x)
