"""LoRA on linear layers, attached with a forward hook: ``out + (alpha / r) * B(A(dropout(x)))``.

``FusedQKVLoRA`` covers a fused ``qkv`` projection (BLIP-2's ViT): one LoRA per chosen slice, zeros elsewhere.
"""

from __future__ import annotations

import math

import torch
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


class FusedQKVLoRA(nn.Module):
    """LoRA on chosen slices (q, k, v) of a fused ``qkv`` projection; the other slices get zeros."""

    def __init__(self, dim: int, slices: list[int], rank: int, alpha: float, dropout: float):
        super().__init__()
        self.dim = dim
        self.parts = nn.ModuleDict({str(i): LoRA(dim, dim, rank, alpha, dropout) for i in slices})

    def forward(self, x: Tensor) -> Tensor:
        outs = [self.parts[str(i)](x) if str(i) in self.parts else None for i in range(3)]
        ref = next(o for o in outs if o is not None)
        return torch.cat([o if o is not None else torch.zeros_like(ref) for o in outs], dim=-1)


def attach_lora(linear: nn.Module, lora: nn.Module) -> None:
    """Register ``lora`` as the projection's ``lora`` child and add its output to the projection's (a stateless
    forward hook, so the backbone's own parameter names never change)."""
    linear.add_module("lora", lora)
    linear.register_forward_hook(_lora_hook)


def _lora_hook(linear: nn.Module, args: tuple, out: Tensor) -> Tensor:
    return out + linear.lora(args[0])
