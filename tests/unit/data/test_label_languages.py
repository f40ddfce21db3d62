"""Class folders described in one language only: no captions invented from folder names in the other, and a warning
that says which texts are missing; tokenizer coverage counted in content characters, not tokens."""

from __future__ import annotations

import pandas as pd
import pytest
from PIL import Image

from mwa_cli.data.label_text import caption_languages, label_warnings, parse_label_text_items
from mwa_cli.data.prepare import prepare_dataset
from mwa_cli.data.stats import coverage_line, tokenizer_coverage

BOTH = {"en", "ja"}


def _folders(root, labels):
    for n, label in enumerate(labels):
        (root / label).mkdir(parents=True)
        for k in range(2):
            Image.new("RGB", (16, 16), (40 * n, 90 * k, 30)).save(root / label / f"{k}.png")
    return root


def test_caption_languages():
    texts = parse_label_text_items(["global=a stain over the whole cloth", "ng=割れた部品", "dent=a dent",
                                    "dent=へこみ"])
    assert caption_languages("global", texts, BOTH) == {"en"}  # no Japanese from the folder name "global"
    assert caption_languages("ng", texts, BOTH) == {"ja"}
    assert caption_languages("dent", texts, BOTH) == BOTH
    assert caption_languages("rust", texts, BOTH) == BOTH  # not described: folder name, as before
    assert caption_languages("scratch", {"scratch": {"en": "a deep scratch"}}, BOTH) == BOTH  # 傷: a known name
    assert caption_languages("ng", texts, {"en"}) == {"en"}  # described only in a language not asked for


def test_lang_both_with_english_only_texts_makes_no_japanese_captions_from_folder_names(tmp_path):
    photos = _folders(tmp_path / "photos", ["global", "local", "nominal"])
    texts = parse_label_text_items(["global=a cloth discoloured all over", "local=a cloth with a small local flaw",
                                    "nominal=a flawless woven cloth"])
    res = prepare_dataset(photos, tmp_path / "data", fmt="folders", lang="both", image_size=16, progress=False,
                          label_texts=texts, workers=1)
    caps = pd.read_csv(tmp_path / "data" / "manifest.csv")["caption"].tolist()
    assert caps and all(c.isascii() for c in caps)  # the given English texts only
    assert not any("global" in c or "nominal" in c for c in caps)
    warnings = [n for n in res.notes if n.startswith("warning:") and "split has only" not in n]
    assert warnings == ["warning: Japanese texts are missing for 'global', 'local', 'nominal': only English "
                        "descriptions were given, so no Japanese captions were made for them (none from the folder "
                        "names); add one with --label-text global=\"<Japanese phrase>\" or a ja column in "
                        "--label-map"]
    assert not any("describe them" in n for n in res.notes)  # no advice to pass what was passed


def test_code_names_without_any_description_still_warn():
    notes = label_warnings(["ok", "ng", "scratch"], parse_label_text_items(["ng=a cracked part"]), BOTH)
    assert len(notes) == 2
    assert "'ok'" in notes[0] and "'ng'" not in notes[0] and "describe them" in notes[0]
    assert notes[1].startswith("warning: Japanese texts are missing for 'ng':")


def test_tokenizer_coverage_counts_unknown_content_characters():
    cov = tokenizer_coverage(["左上に傷がある金属板"], None)  # the built-in tokenizer reads it as ['▁', <unk>]
    if cov["status"] != "ok":
        pytest.skip(cov["reason"])
    assert cov["unknown_tokens"] < cov["tokens"]  # by tokens it looks half readable ...
    assert cov["characters"] == 10 and cov["unknown_characters"] == 10  # ... but none of its content is
    assert cov["unknown_character_fraction"] == 1.0
    line, severity = coverage_line(cov)
    assert line.startswith("10 of 10 caption characters unknown (100.0 %), in 1 of 1 captions") and severity == "bad"
    clean = tokenizer_coverage(["a scratch on a plate"], None)
    assert clean["unknown_characters"] == 0 and coverage_line(clean)[1] == "ok"
