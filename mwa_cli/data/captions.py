"""Template captions for class-folder datasets (photos/<label>/*.jpg).

Templates live in the package's templates/captions_en.txt and captions_ja.txt (one per line, `{label}` placeholder,
`#` comments); `--templates FILE` replaces them with the user's own file (same syntax; a line may start with
`en:` or `ja:` to tag its language).
"""

from __future__ import annotations

from pathlib import Path

from mwa_cli.errors import ConfigError
from mwa_cli.resources import TEMPLATES, package_file

LANGS = ("en", "ja", "both")

# Common English defect-class folder names, in Japanese for the ja templates.
JA_LABELS = {
    "scratch": "傷", "scratches": "傷", "crack": "ひび割れ", "cracks": "ひび割れ", "dent": "へこみ", "dents": "へこみ",
    "rust": "錆", "stain": "汚れ", "rust_stain": "錆汚れ", "hole": "穴", "holes": "穴", "missing_part": "部品の欠品",
    "missing": "欠品", "misalignment": "位置ずれ", "misaligned": "位置ずれ", "no_defect": "欠陥なし", "good": "良品",
    "ok": "良品", "normal": "正常品", "defect": "欠陥", "contamination": "異物", "burr": "バリ", "chip": "欠け",
    "discoloration": "変色", "bubble": "気泡", "deformation": "変形",
}


def _parse(text: str, default_lang: str) -> list[tuple[str, str]]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        lang = default_lang
        for tag in ("en:", "ja:"):
            if line.lower().startswith(tag):
                lang, line = tag[:2], line[3:].strip()
        if line:
            out.append((lang, line))
    return out


def load_templates(lang: str = "both", template_file: Path | None = None) -> list[tuple[str, str]]:
    """[(lang, template)] for `lang` in en | ja | both, or from the user's file."""
    if lang not in LANGS:
        raise ConfigError(f"--lang must be one of en, ja, both (got {lang!r})")
    if template_file is not None:
        path = Path(template_file)
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the template file {path}: {exc}",
                              hint="a UTF-8 text file with one caption template per line, using {label}") from None
        tpls = _parse(text, "en" if lang == "both" else lang)
        if lang != "both":
            tpls = [(lg, t) for lg, t in tpls if lg == lang]
    else:
        tpls = []
        for lg in (("en", "ja") if lang == "both" else (lang,)):
            text = package_file(TEMPLATES, f"captions_{lg}.txt").read_text(encoding="utf-8")
            tpls += _parse(text, lg)
    bad = [t for _, t in tpls if "{label}" not in t]
    if bad:
        raise ConfigError(f"caption template without {{label}}: {bad[0]!r}",
                          hint="every template line must contain {label}, e.g. 'a photo of {label}'")
    if not tpls:
        raise ConfigError("no caption templates to use", hint="add template lines containing {label}")
    return tpls


def render(template: str, label: str, lang: str, label_texts: dict[str, dict[str, str]] | None = None) -> str:
    """The caption of `template` for folder `label`: the user's description of the label in `lang` when given
    (`--label-text`, `--label-map`), else a known Japanese name (ja), else the folder name with _ and - as spaces."""
    key = label.strip().lower().replace("-", "_").replace(" ", "_")
    described = (label_texts or {}).get(label, {}).get(lang)
    if described:
        name = described
    elif lang == "ja" and key in JA_LABELS:
        name = JA_LABELS[key]
    else:
        name = " ".join(label.replace("_", " ").replace("-", " ").split())
    return template.replace("{label}", name)
