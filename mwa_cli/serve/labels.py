"""The served pages' words in English and Japanese, chosen per request from the browser's Accept-Language."""

from __future__ import annotations

LABELS: dict[str, dict[str, str]] = {
    "en": {"title": "photo search", "search": "Search", "placeholder": "e.g. a scratch on the upper left / 右上に傷",
           "photos": "photos", "read_only": "read-only", "photos_like": "Photos like", "nearest": "Nearest photos",
           "similar": "Similar photos", "top": "top", "captions": "Closest captions", "score": "score",
           "caption": "caption", "label": "label", "no_preview": "no preview",
           "why": "Right of each photo: why it matched — red cells lowered the similarity most when covered up "
                  "(occlusion).",
           "link_title": "find photos like this one and the closest captions", "heat_alt": "heat map: what drove "
           "the match", "line": "line"},
    "ja": {"title": "写真検索", "search": "検索", "placeholder": "例: 右上に傷 / a scratch on the upper left",
           "photos": "枚", "read_only": "閲覧のみ", "photos_like": "似た写真:", "nearest": "近い写真",
           "similar": "似た写真", "top": "上位", "captions": "近い説明文", "score": "スコア", "caption": "説明文",
           "label": "ラベル", "no_preview": "プレビューなし",
           "why": "各写真の右: 一致の理由 — 赤いセルほど、隠したときに類似度が大きく下がった部分です(遮蔽法)。",
           "link_title": "この写真に似た写真と近い説明文を探す", "heat_alt": "ヒートマップ: 一致の理由", "line": "ライン"},
}


def pick_language(accept_language: str | None) -> str:
    """"ja" when the browser prefers Japanese over English, else "en"."""
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip().lower()
        if tag.startswith("ja"):
            return "ja"
        if tag.startswith("en"):
            return "en"
    return "en"
