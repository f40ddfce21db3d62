"""New Knowledge Extractor (NKE): a per-modality bottleneck adapter parallel to each FFN.

For layer input ``x``: ``h = x + Attn(LN1(x))`` and the layer returns ``h + FFN(LN2(h))``. NKE adds
``s * up(dropout(relu(down(h))))`` to that output, with the expert picked by modality (``A`` vision, ``B``
language) as the official code does (there, with the names swapped; here, ``A`` is always vision).
The layer hands it ``h`` through its ``mwa`` child (``modules.layer_adapters.LayerAdapter``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class Bottleneck(nn.Module):
    """d -> r -> d with ReLU and dropout; up-projection and biases zero so the output starts at 0."""

    def __init__(self, dim: int, rank: int, scale: float, dropout: float):
        super().__init__()
        self.down = nn.Linear(dim, rank)
        self.up = nn.Linear(rank, dim)
        self.dropout = nn.Dropout(dropout)
        self.scale = scale
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: Tensor) -> Tensor:
        return self.up(self.dropout(torch.relu(self.down(h)))) * self.scale


class NKE(nn.Module):
    """One bottleneck per modality expert."""

    def __init__(self, dim: int, rank: int, scale: float, dropout: float = 0.1):
        super().__init__()
        self.A = Bottleneck(dim, rank, scale, dropout)
        self.B = Bottleneck(dim, rank, scale, dropout)

    def forward(self, h: Tensor, split: int) -> Tensor:
        if split == -1:
            return self.A(h)
        if split == 0:
            return self.B(h)
        return torch.cat([self.A(h[:, :split]), self.B(h[:, split:])], dim=1)
