"""Alignment Enhancer (AE): one residual block per layer, shared by both modalities, after the FFN.

``out = y + DropPath(fc2(LN(GELU(fc1(y)))))``, no LayerNorm before it, as in the official code. The hidden
width is a parameter: the official code uses the full FFN width (``paper-code``), which adds 25-30 % of the
backbone's parameters; the default here keeps NKE + AE within 3 %. ``fc2`` starts at zero by default so the
adapted model equals the backbone before training (``paper-code`` keeps the official trunc-normal init).
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
