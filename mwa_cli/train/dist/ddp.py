"""DistributedDataParallel over the model's two encoders: only trainable parameters are registered, and those a
method never uses are found once by a probe and ignored (no `find_unused_parameters` graph walk every step)."""

from __future__ import annotations

import inspect
from typing import Callable

import torch

from mwa_cli.train.loss import model_loss


class DualEncoder(torch.nn.Module):
    """forward(pixels, ids, mask) → (image_emb, text_emb): one DDP forward per micro-batch."""

    def __init__(self, model: torch.nn.Module, encode_image: Callable | None = None,
                 encode_text: Callable | None = None):
        super().__init__()
        self.model = model
        self._enc_img = encode_image or model.encode_image
        self._enc_txt = encode_text or model.encode_text

    def from_hidden(self, start: int) -> None:
        """Take the feature cache's hidden states entering layer `start` instead of pixels and token ids."""
        self._enc_img = lambda hidden: self.model.encode_image_hidden(hidden, start)
        self._enc_txt = lambda hidden, mask: self.model.encode_text_hidden(hidden, mask, start)

    def forward(self, pixels: torch.Tensor, input_ids: torch.Tensor, padding_mask: torch.Tensor):
        return self._enc_img(pixels), self._enc_txt(input_ids, padding_mask)


def unused_trainables(model: torch.nn.Module, encode_image: Callable, encode_text: Callable, device: torch.device
                      ) -> list[str]:
    """Names of trainable parameters that get no gradient from a (2-sample) image+text forward/backward.

    Runs under a forked RNG and leaves no gradient behind, so training is not changed by the probe."""
    cfg = model.config
    s = int(cfg.img_size)
    L = min(8, int(getattr(cfg, "text_len", 8)))
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        px = torch.zeros(2, 3, s, s, device=device)
        ids = torch.full((2, L), 5, dtype=torch.long, device=device)
        mask = torch.zeros(2, L, dtype=torch.long, device=device)
        loss = model_loss(model, encode_image(px), encode_text(ids, mask))
        loss.backward()
    names = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    for p in model.parameters():
        p.grad = None
    return names


def wrap_ddp(model: torch.nn.Module, encode_image: Callable, encode_text: Callable, device: torch.device):
    """DDP over a `DualEncoder` of `model`: only trainable parameters are registered and averaged."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    unused = unused_trainables(model, encode_image, encode_text, device)
    find_unused = False
    wrapper = DualEncoder(model, encode_image, encode_text)
    if unused:
        names = [f"model.{n}" for n in unused]
        if hasattr(DDP, "_set_params_and_buffers_to_ignore_for_model"):
            DDP._set_params_and_buffers_to_ignore_for_model(wrapper, names)
        else:  # pragma: no cover - older torch
            find_unused = True
    ids = [device.index] if device.type == "cuda" else None
    # buffers are built identically on every rank and never change: no per-forward buffer broadcast
    params = inspect.signature(DDP.__init__).parameters
    buffers = {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
    return DDP(wrapper, device_ids=ids, output_device=device.index if ids else None,
               find_unused_parameters=find_unused, gradient_as_bucket_view=True, **buffers)
