"""The tokenizer of a run or a backbone: one function that training, eval, index and search all build it with.

A Hugging Face backbone's own tokenizer (``hf:`` paths), else BEiT-3's sentencepiece model, with the token table
of a model's vocabulary extension when it has one (`mwa_cli.adapters.vocab`).
"""

from __future__ import annotations

from typing import Any

from mwa_cli.errors import ConfigError


def load_tokenizer(tokenizer_path: str | None, text_len: int, model: Any = None) -> Any:
    """The tokenizer of a run: the backbone's sentencepiece model, plus the token table of ``model``'s vocabulary
    extension when it has one (`mwa_cli.adapters.vocab`). Training, eval, index and search all build it here."""
    from mwa_cli.adapters.vocab import added_tokens_from, extension_table
    from mwa_cli.models.tokenizer import Beit3Tokenizer

    if tokenizer_path and str(tokenizer_path).startswith("hf:"):  # a Hugging Face backbone's own tokenizer
        from mwa_cli.models.hf import HFTokenizer

        return HFTokenizer.from_pretrained(str(tokenizer_path)[3:], max_len=text_len)
    if not tokenizer_path:
        from mwa_cli.models.sources import TOKENIZER_URL

        raise ConfigError("no tokenizer for this backbone: BEiT-3 needs its sentencepiece model, beit3.spm",
                          hint=f"download {TOKENIZER_URL} and pass --tokenizer PATH (or put it beside the weights "
                               "file)")
    added = added_tokens_from(extension_table(model)) if model is not None else None
    return Beit3Tokenizer.from_file(tokenizer_path, max_len=text_len, added_tokens=added)
