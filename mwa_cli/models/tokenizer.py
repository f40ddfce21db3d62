"""BEiT-3's text tokenizer: XLM-R's id scheme over a sentencepiece model, without transformers.

Ids: ``<s>`` = 0, ``<pad>`` = 1, ``</s>`` = 2, ``<unk>`` = 3, sentencepiece piece ``p`` -> ``p + 1`` (its
``<unk>`` piece 0 -> 3). A caption becomes ``[<s>] + ids[:max_len - 2] + [</s>]`` padded with ``<pad>`` to
``max_len``; the padding mask is 1 on pads. Reproduces transformers' slow ``XLMRobertaTokenizer`` (checked in
the tests against ids made with it); transformers 5's version of that class silently breaks on beit3.spm.

Optional ``added_tokens`` (vocabulary extension for words the model does not know) map a string to a new id;
they are matched before sentencepiece runs, longest first.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterable

import sentencepiece as spm
import torch
from torch import Tensor

from mwa_cli.errors import ConfigError
from mwa_cli.fileio import sha256_file
from mwa_cli.models.text_cut import note_cut
from mwa_cli.safe_open import not_regular

BOS_ID, PAD_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
FAIRSEQ_OFFSET = 1


class Beit3Tokenizer:
    """Sentencepiece tokenizer with BEiT-3 ids, fixed-length batches and unknown-token accounting."""

    def __init__(self, processor: spm.SentencePieceProcessor, *, max_len: int = 64, path: str | None = None,
                 added_tokens: dict[str, int] | None = None):
        if max_len < 3:
            raise ConfigError(f"max_len must be at least 3 (got {max_len})")
        self.sp = processor
        self.max_len = max_len
        self.path = path
        self.added_tokens: dict[str, int] = dict(added_tokens or {})

    @classmethod
    def from_file(cls, path: str | Path, *, max_len: int = 64,
                  added_tokens: dict[str, int] | None = None) -> "Beit3Tokenizer":
        """Load a sentencepiece model file (e.g. beit3.spm)."""
        path = Path(path)
        why = not_regular(path)  # sentencepiece would block on a FIFO
        if why is not None:
            raise ConfigError(f"tokenizer model not found: {path}" if not path.exists() else
                              f"tokenizer model {path}: {why}",
                              hint="pass --tokenizer PATH to a sentencepiece .spm file (BEiT-3 uses beit3.spm)")
        proc = spm.SentencePieceProcessor()
        try:
            proc.Load(str(path))
        except (OSError, RuntimeError) as exc:
            raise ConfigError(f"not a sentencepiece model: {path} ({exc})") from None
        return cls(proc, max_len=max_len, path=str(path), added_tokens=added_tokens)

    @property
    def base_vocab_size(self) -> int:
        """Ids the sentencepiece model itself can produce (specials + pieces + XLM-R's ``<mask>``)."""
        return self.sp.GetPieceSize() + FAIRSEQ_OFFSET + 1

    @property
    def vocab_size(self) -> int:
        return max([self.base_vocab_size, *[i + 1 for i in self.added_tokens.values()]])

    def sha256(self) -> str | None:
        """Hash of the model file, to tie artefacts to their tokenizer."""
        if not self.path:
            return None
        return sha256_file(self.path)

    def _sp_ids(self, text: str) -> list[int]:
        return [p + FAIRSEQ_OFFSET if p else UNK_ID for p in self.sp.EncodeAsIds(text)]

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without ``<s>``/``</s>`` or truncation."""
        if not self.added_tokens:
            return self._sp_ids(text)
        ids: list[int] = []
        words = sorted(self.added_tokens, key=len, reverse=True)
        start = 0
        i = 0
        while i < len(text):
            match = next((w for w in words if text.startswith(w, i)), None)
            if match is None:
                i += 1
                continue
            if i > start:
                ids.extend(self._sp_ids(text[start:i]))
            ids.append(self.added_tokens[match])
            i += len(match)
            start = i
        if start < len(text):
            ids.extend(self._sp_ids(text[start:]))
        return ids

    def pieces(self, text: str) -> list[str]:
        """Sentencepiece pieces of ``text`` (for showing which parts are unknown)."""
        return list(self.sp.EncodeAsPieces(text))

    def format_ids(self, ids: list[int]) -> tuple[list[int], list[int]]:
        """``[<s>] + ids[:max_len-2] + [</s>]`` padded to ``max_len``, and its padding mask (1 = pad)."""
        body = [BOS_ID, *ids[: self.max_len - 2], EOS_ID]
        pad = self.max_len - len(body)
        return body + [PAD_ID] * pad, [0] * len(body) + [1] * pad

    def encode_batch(self, texts: Iterable[str]) -> tuple[Tensor, Tensor]:
        """Fixed-length ``(input_ids, padding_mask)`` LongTensors of shape [B, max_len]."""
        texts = list(texts)
        encoded = [self.encode(t) for t in texts]
        note_cut([t for t, ids in zip(texts, encoded) if len(ids) > self.max_len - 2], self.max_len)
        rows = [self.format_ids(ids) for ids in encoded]
        if not rows:
            empty = torch.zeros((0, self.max_len), dtype=torch.long)
            return empty, empty.clone()
        ids = torch.tensor([r[0] for r in rows], dtype=torch.long)
        mask = torch.tensor([r[1] for r in rows], dtype=torch.long)
        return ids, mask

    def unknown_characters(self, text: str) -> list[str]:
        """The parts of ``text`` that map to ``<unk>`` (characters outside the vocabulary)."""
        out: list[str] = []
        for piece, pid in zip(self.sp.EncodeAsPieces(text), self.sp.EncodeAsIds(text)):
            if pid == 0:
                out.extend(ch for ch in piece.replace("\u2581", "") if not ch.isspace())
        if self.added_tokens:
            out = [ch for ch in out if ch not in self.added_tokens]
        return out

    def unknown_report(self, texts: Iterable[str], top: int = 20) -> dict:
        """How many tokens of ``texts`` are ``<unk>``: totals, per-text counts and the most frequent characters."""
        per_text: list[int] = []
        total = 0
        chars: Counter[str] = Counter()
        for text in texts:
            ids = self.encode(text)
            n_unk = sum(1 for i in ids if i == UNK_ID)
            per_text.append(n_unk)
            total += len(ids)
            if n_unk:
                chars.update(self.unknown_characters(text))
        unknown = sum(per_text)
        return {
            "texts": len(per_text),
            "tokens": total,
            "unknown_tokens": unknown,
            "unknown_fraction": (unknown / total) if total else 0.0,
            "texts_with_unknown": sum(1 for n in per_text if n),
            "per_text_unknown": per_text,
            "top_unknown_characters": chars.most_common(top),
        }
