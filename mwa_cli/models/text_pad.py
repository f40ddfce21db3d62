"""Captions padded to the longest of their batch, rounded up to a few bucket lengths, instead of the tokenizer's
fixed length (docs/decisions.md, "Text padded to a bucket length").

The tokenizers pad every caption to the configured text length (64 tokens for BEiT-3); plant captions hold 8-26.
A backbone whose text encoder masks its padding gives the same embeddings whatever the padding's length, so the
columns that are padding in every row of a batch can be dropped. The width is rounded up to a bucket so compiled
code (one graph per shape) is reused across batches: multiples of 8 up to 64, then of 32, never past the
tokenizer's length; a data set's batches use two or three of them.
"""

from __future__ import annotations

import torch

TEXT_BUCKETS = (8, 16, 24, 32, 40, 48, 56, 64)  # multiples of 8: tensor-core friendly, docs/decisions.md
BUCKET_STEP_PAST_64 = 32


def bucket_length(longest: int, cap: int) -> int:
    """The shortest bucket length ≥ `longest` (at least 1), and at most `cap` (the tokenizer's length)."""
    longest = max(1, int(longest))
    bucket = next((b for b in TEXT_BUCKETS if b >= longest), None)
    if bucket is None:
        bucket = -(-longest // BUCKET_STEP_PAST_64) * BUCKET_STEP_PAST_64
    return min(bucket, int(cap))


def bucket_lengths(cap: int) -> list[int]:
    """Every width `trim_padding` can give for a tokenizer of length `cap`."""
    return sorted({bucket_length(n, cap) for n in range(1, int(cap) + 1)})


def padding_is_free(model) -> bool:
    """True when `model.encode_text` masks its padding, so the padding's length cannot change an embedding
    (BEiT-3, CLIP); SigLIP was trained on fixed-length padding without a mask and reads its last position."""
    return bool(getattr(model, "text_padding_free", False))


def trim_padding(padding_mask: torch.Tensor, *texts: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(padding_mask, *texts) cut to the batch's bucket length along dim 1: the columns past it are padding in
    every row. `texts`: token ids [B, L] or hidden states [B, L, d]. Reads the mask on its device: call it with
    CPU tensors on the training hot path (a CUDA mask would make the host wait)."""
    kept = (padding_mask == 0).any(dim=0).nonzero()
    longest = int(kept[-1]) + 1 if kept.numel() else 1
    width = bucket_length(longest, padding_mask.shape[1])
    return tuple(t[:, :width].contiguous() for t in (padding_mask, *texts))


def second_width(first: int, lengths: torch.Tensor, cap: int) -> int | None:
    """Another width the batches of captions with these token `lengths` can take than `first` (the widest one
    when it differs, else the bucket below), or None when they all take `first`: compiling at two widths before
    training makes the text length dynamic, so no later batch recompiles."""
    widths = bucket_lengths(cap)
    low, high = bucket_length(int(lengths.min()), cap), bucket_length(int(lengths.max()), cap)
    if low == high:
        return None
    if high != first:
        return high
    below = [w for w in widths if low <= w < first]
    return below[-1] if below else None
