"""LoRA on linear layers, attached with a forward hook: ``out + (alpha / r) * B(A(dropout(x)))``."""

from __future__ import annotations

import math

from torch import Tensor, nn


class LoRA(nn.Module):
    """Low-rank update of one ``nn.Linear``; ``B`` starts at zero so the model is unchanged at step 0."""

    def __init__(self, in_features: int, out_features: int, rank: int, alpha: float, dropout: float):
        super().__init__()
        self.lora_A = nn.Linear(in_features, rank, bias=False)
        self.lora_B = nn.Linear(rank, out_features, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.scaling = alpha / rank
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x: Tensor) -> Tensor:
        return self.lora_B(self.lora_A(self.dropout(x))) * self.scaling
