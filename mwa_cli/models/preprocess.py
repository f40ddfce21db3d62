"""Pixels every backbone receives: uint8 photos made float, resized and normalised with mean = std = 0.5.

Training augments on top of this (`mwa_cli.train.data.augment_batch`); evaluation, indexing and export feed
`to_pixels` directly. A backbone that expects other statistics converts them inside its own `encode_image`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MEAN = 0.5
STD = 0.5


def to_pixels(images_u8: torch.Tensor, out_size: int) -> torch.Tensor:
    """uint8 [B,S,S,3] → float [B,3,out,out] normalised with mean = std = 0.5 (eval: plain resize)."""
    x = images_u8.permute(0, 3, 1, 2).float()
    if x.shape[-1] != out_size or x.shape[-2] != out_size:
        x = F.interpolate(x, size=(out_size, out_size), mode="bicubic", align_corners=False, antialias=True)
        x = x.clamp_(0, 255)
    return x.mul_(1.0 / (255.0 * STD)).sub_(MEAN / STD)
