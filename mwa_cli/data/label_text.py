"""Descriptions of class-folder labels for the caption templates, and which folder names need one.

A folder name is often a code ("ok", "ng", "03", "global") that makes a meaningless caption ("a photo of ok").
Users describe labels either on the command line (`--label-text ng="a part with a crack"`, repeatable; a phrase
with Japanese characters is used by the Japanese templates, any other by the English ones) or in a map file:
JSON `{"ng": {"en": "...", "ja": "..."}}` (or `{"ng": "..."}`), or CSV/TSV with a `label` column and `en` / `ja`
(or a single `text`) columns. The command line wins over the file.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from mwa_cli.errors import ConfigError
from mwa_cli.safe_open import InputFileError, parse_json, read_text

LabelTexts = dict[str, dict[str, str]]  # label -> {"en": phrase, "ja": phrase}

_JAPANESE = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uff66-\uff9f]")
# Folder names that are codes or verdicts rather than words a caption can use.
_CODES = {"ok", "ng", "nok", "good", "bad", "pass", "fail", "passed", "failed", "accept", "reject", "rejected",
          "global", "local", "other", "others", "misc", "none", "unknown", "normal", "abnormal", "anomaly",
          "defect", "defects", "defective", "class", "positive", "negative", "pos", "neg", "true", "false", "yes",
          "no", "a", "b", "c", "x", "y", "z", "na", "n/a", "tmp", "new", "old"}


def language_of(phrase: str) -> str:
    """"ja" when the phrase holds kana or kanji, else "en"."""
    return "ja" if _JAPANESE.search(phrase) else "en"


def parse_label_text_items(items: list[str] | None) -> LabelTexts:
    """`--label-text LABEL=PHRASE` items → {label: {lang: phrase}} (language from the phrase's script)."""
    out: LabelTexts = {}
    for item in items or []:
        label, sep, phrase = item.partition("=")
        label, phrase = label.strip(), phrase.strip().strip('"').strip("'").strip()
        if not sep or not label or not phrase:
            raise ConfigError(f"--label-text {item!r} is not LABEL=PHRASE",
                              hint='e.g. --label-text ng="a part with a crack" --label-text ng="ひび割れのある部品"')
        out.setdefault(label, {})[language_of(phrase)] = phrase
    return out


def load_label_map(path: str | Path) -> LabelTexts:
    """Read a label description file (JSON, or CSV/TSV with label + en/ja/text columns)."""
    p = Path(path)
    hint = ('JSON {"ng": {"en": "a part with a crack", "ja": "ひび割れのある部品"}} or a CSV with columns '
            "label,en,ja")
    try:
        text = read_text(p, what="label map")
    except InputFileError as exc:
        raise ConfigError(exc.message, hint=hint) from None
    out: LabelTexts = {}
    if p.suffix.lower() == ".json":
        try:
            raw = parse_json(text)
        except ValueError as exc:
            raise ConfigError(f"the label map {p} is not valid JSON: {exc}", hint=hint) from None
        if not isinstance(raw, dict):
            raise ConfigError(f"the label map {p} must be a JSON object of label → description", hint=hint)
        for label, value in raw.items():
            if isinstance(value, str):
                out[str(label)] = {language_of(value): value.strip()}
            elif isinstance(value, dict) and value and all(k in ("en", "ja") and isinstance(v, str)
                                                           for k, v in value.items()):
                out[str(label)] = {k: v.strip() for k, v in value.items() if v.strip()}
            else:
                raise ConfigError(f"the label map {p}: the entry for {label!r} must be a phrase or "
                                  '{"en": ..., "ja": ...}', hint=hint)
        return out
    delimiter = "\t" if p.suffix.lower() == ".tsv" else ","
    rows = list(csv.DictReader(io.StringIO(text), delimiter=delimiter))
    cols = {c.strip().lower(): c for c in (rows[0].keys() if rows else [])}
    if "label" not in cols or not ({"en", "ja", "text"} & set(cols)):
        raise ConfigError(f"the label map {p} needs a header with a label column and en / ja / text columns",
                          hint=hint)
    for n, row in enumerate(rows, start=2):
        label = (row.get(cols["label"]) or "").strip()
        if not label:
            raise ConfigError(f"the label map {p}, line {n}: empty label", hint=hint)
        entry = out.setdefault(label, {})
        for key in ("en", "ja"):
            if key in cols and (row.get(cols[key]) or "").strip():
                entry[key] = row[cols[key]].strip()
        if "text" in cols and (row.get(cols["text"]) or "").strip():
            phrase = row[cols["text"]].strip()
            entry[language_of(phrase)] = phrase
    return out


def merge_label_texts(*maps: LabelTexts | None) -> LabelTexts:
    """Later maps win, per label and language."""
    out: LabelTexts = {}
    for m in maps:
        for label, texts in (m or {}).items():
            out.setdefault(label, {}).update(texts)
    return out


def needs_description(label: str) -> bool:
    """True for folder names a caption cannot use as words: codes/verdicts, numbers, names with digits, one or
    two letters."""
    name = label.strip().lower().replace("-", "_").replace(" ", "_")
    return name in _CODES or any(ch.isdigit() for ch in name) or len(name.replace("_", "")) <= 2


def _known_japanese(label: str) -> bool:
    from mwa_cli.data.captions import JA_LABELS

    return label.strip().lower().replace("-", "_").replace(" ", "_") in JA_LABELS


def caption_languages(label: str, label_texts: LabelTexts, langs: set[str]) -> set[str]:
    """The template languages a class folder gets captions in. A label described in one of `langs` but not in
    another gets no captions in the other (built from its folder name they would contradict the description),
    except Japanese for a folder name mwa knows in Japanese (`captions.JA_LABELS`); a label described in none of
    them keeps every language (captions from the folder name, with `label_warnings`' warning for code names)."""
    described = set(label_texts.get(label, {})) & langs
    if not described:
        return set(langs)
    return {lang for lang in langs if lang in described or (lang == "ja" and _known_japanese(label))}


_LANG_NAMES = {"en": "English", "ja": "Japanese"}


def label_warnings(labels: list[str], label_texts: LabelTexts, langs: set[str]) -> list[str]:
    """Warnings for class folders whose captions would say nothing: folder names that are codes and have no
    description (with the command that describes them), and labels described in some languages but not all
    (no captions were made in the others: say which texts are missing)."""
    bad = [lb for lb in sorted(labels) if needs_description(lb) and not set(label_texts.get(lb, {})) & langs
           and any(not (lang == "ja" and _known_japanese(lb)) for lang in langs)]
    out = []
    if bad:
        example = " ".join(f'--label-text {lb}="<what a photo of {lb} shows>"' for lb in bad[:3])
        out.append(f"warning: the class folder name(s) {', '.join(repr(b) for b in bad)} are not words a caption can "
                   f"use (captions would read e.g. \"a photo of {bad[0]}\"): describe them, e.g. `mwa prepare ... "
                   f"{example}` (a Japanese phrase sets the Japanese captions), or give --label-map FILE (label,en,ja)")
    for lang in sorted(langs):
        missing = [lb for lb in sorted(labels) if lang not in caption_languages(lb, label_texts, langs)]
        if missing:
            name = _LANG_NAMES.get(lang, lang)
            given = " or ".join(_LANG_NAMES.get(x, x) for x in sorted(langs - {lang}))
            out.append(f"warning: {name} texts are missing for {', '.join(repr(m) for m in missing)}: only {given} "
                       f"descriptions were given, so no {name} captions were made for them (none from the folder "
                       f"names); add one with --label-text {missing[0]}=\"<{name} phrase>\" or a {lang} column in "
                       "--label-map")
    return out
