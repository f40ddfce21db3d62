"""The label-level retrieval protocol, beside the instance one, and which of the two is primary.

When captions repeat (class folders: every photo of a label has the same template captions), the instance
protocol cannot tell a model that understands the labels from one that does not: a text query's "correct" photo
is one of dozens of equally correct ones. The label-level protocol counts a retrieved caption or photo as a hit
when it carries the query's caption text exactly (key "caption", the default: with template captions that is the
query's label, and it never merges captions that say different things) or, on request, the query's label (key
"label"). Ranks come from `metrics.group_retrieval_ranks`, one per query, so they can be resampled like the
instance ranks; per-label numbers group the queries by their image's label.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from mwa_cli.eval.chance import chance_recalls
from mwa_cli.eval.metrics import _summary, group_retrieval_ranks

INSTANCE_PROTOCOL = ("Instance level: an image query hits when one of its own captions is retrieved, a caption "
                     "query when its own image is retrieved.")
LABEL_PROTOCOLS = {
    "label": ("Label level: an image query hits when a retrieved caption belongs to an image with the same label, "
              "a caption query when a retrieved image has its image's label."),
    "caption": ("Identical-caption level: an image query hits when a retrieved caption has exactly the text of one "
                "of its own captions, a caption query when a retrieved image has a caption with exactly its text."),
}


def captions_repeat(captions: Sequence[str]) -> bool:
    return len(set(captions)) < len(captions)


def primary_protocol(captions: Sequence[str]) -> str:
    """"label_level" when some caption text repeats in the evaluated split, else "instance"."""
    return "label_level" if captions_repeat(captions) else "instance"


PROTOCOL_WORDS = {"instance": "instance level", "label_level": "label level"}


def protocol_words(split_data: Any) -> str:
    """"label level" or "instance level": the primary protocol of an evaluated split (`SplitData`, or None)."""
    captions = getattr(split_data, "captions", None) or []
    return PROTOCOL_WORDS[primary_protocol(captions)]


def primary_recall(result: dict) -> tuple[str, dict]:
    """(protocol, figures) of an evaluation's primary protocol: ("label_level", its `label_level` entry) when
    captions repeat in the split, else ("instance", the evaluation itself). Both hold i2t/t2i R@K, rsum, mean_recall."""
    level = result.get("label_level")
    if result.get("primary_protocol") == "label_level" and isinstance(level, dict) and level.get("rsum") is not None:
        return "label_level", level
    return "instance", result


def primary_rsum(result: dict) -> float:
    """The RSUM of an evaluation's primary protocol: label-level when captions repeat in the split (instance RSUM
    cannot see a collapse there), else instance. What the trainer keeps its best adapter and stops early by."""
    return float(primary_recall(result)[1]["rsum"])


def protocol_groups(key: str, labels: Sequence[str], captions: Sequence[str], text_to_image: Tensor
                    ) -> tuple[Tensor, Tensor]:
    """(image_groups [N_img, K] padded with -1, text_groups [N_txt]) for `group_retrieval_ranks`."""
    t2i = torch.as_tensor(text_to_image, dtype=torch.long).reshape(-1).cpu()
    values = [labels[int(i)] for i in t2i] if key == "label" else list(captions)
    ids: dict[str, int] = {}
    text_groups = torch.tensor([ids.setdefault(v, len(ids)) for v in values], dtype=torch.long)
    per_image: list[set[int]] = [set() for _ in labels]
    for j, i in enumerate(t2i.tolist()):
        per_image[i].add(int(text_groups[j]))
    width = max((len(g) for g in per_image), default=1) or 1
    image_groups = torch.full((len(labels), width), -1, dtype=torch.long)
    for i, g in enumerate(per_image):
        if g:
            image_groups[i, :len(g)] = torch.tensor(sorted(g))
    return image_groups, text_groups


def match_counts(image_groups: Tensor, text_groups: Tensor) -> tuple[Tensor, Tensor]:
    """How many items match each query: captions per image query [N_img], images per caption query [N_txt]."""
    counts = torch.bincount(text_groups, minlength=int(text_groups.max()) + 1)
    valid = image_groups >= 0
    per_image_txt = torch.where(valid, counts[image_groups.clamp(min=0)], 0).sum(1)
    images_per_group = torch.zeros_like(counts)
    for g in image_groups[valid].unique().tolist():  # images holding group g
        images_per_group[g] = int((image_groups == g).any(1).sum())
    return per_image_txt, images_per_group[text_groups]


def chance_per_query(image_groups: Tensor, text_groups: Tensor) -> tuple[Tensor, Tensor]:
    """Expected R@1 (percent) of a random ranking for each query: its share of matching items
    (image queries [N_img], caption queries [N_txt])."""
    per_image_txt, per_text_img = match_counts(image_groups, text_groups)
    return (100.0 * per_image_txt.float() / text_groups.numel(),
            100.0 * per_text_img.float() / image_groups.shape[0])


def _chance(i2t: Tensor, t2i: Tensor) -> dict[str, float]:
    return {"i2t_r1": float(i2t.mean()), "t2i_r1": float(t2i.mean())}


def level_chance(image_groups: Tensor, text_groups: Tensor) -> dict[str, Any]:
    """The `chance` entry of the label-level protocol: R@1 per direction (the keys of older eval.json files),
    and every R@K, RSUM and its random-ranking range (`mwa_cli.eval.chance`)."""
    per_image_txt, per_text_img = match_counts(image_groups, text_groups)
    full = chance_recalls(per_image_txt.numpy(), text_groups.numel(), per_text_img.numpy(), image_groups.shape[0])
    return {"i2t_r1": full["i2t"]["r1"], "t2i_r1": full["t2i"]["r1"], **full}


def top_answers(top1_labels: Sequence[str], limit: int = 5) -> list[list[Any]]:
    """[[label, percent of the queries whose best-scoring item carries it], ...], most frequent first."""
    if not top1_labels:
        return []
    names, counts = np.unique(np.array(top1_labels, dtype=object), return_counts=True)
    order = sorted(zip(counts.tolist(), names.tolist()), key=lambda x: (-x[0], x[1]))[:limit]
    return [[str(name), 100.0 * c / len(top1_labels)] for c, name in order]


def label_level_ranks(image_emb: Tensor, text_emb: Tensor, text_to_image: Tensor, *, labels: Sequence[str],
                      captions: Sequence[str], key: str = "caption", chunk_size: int = 4096
                      ) -> tuple[str, Tensor, Tensor, dict[str, Tensor]]:
    """(key, image_groups, text_groups, {"i2t_ranks", "t2i_ranks"}) of the label-level protocol: one rank per
    query, for metrics or for resampling. `key` "label" needs a label on every image."""
    lab = ["" if x is None else str(x) for x in labels]
    if key not in LABEL_PROTOCOLS:
        raise ValueError(f"key must be one of {sorted(LABEL_PROTOCOLS)}")
    if key == "label" and not all(lab):
        raise ValueError("the label key needs a label on every image")
    image_groups, text_groups = protocol_groups(key, lab, captions, text_to_image)
    ranks = group_retrieval_ranks(image_emb, text_emb, image_groups, text_groups, chunk_size=chunk_size, top1=True)
    return key, image_groups, text_groups, ranks


def label_level_metrics(image_emb: Tensor, text_emb: Tensor, text_to_image: Tensor, *, labels: Sequence[str],
                        captions: Sequence[str], key: str = "caption", ks: Sequence[int] = (1, 5, 10),
                        chunk_size: int = 4096, ranks_out: dict | None = None) -> dict[str, Any]:
    """The `label_level` entry of eval.json: the instance metric keys (i2t/t2i R@K and median rank, rsum,
    mean_recall) under the label-level protocol, plus key, protocol, chance R@1 and, when every image has a
    label, per_label (each label's queries ranked against the whole split, with their chance R@1) and top_answers
    (the labels that answer most queries, with their share, per direction).
    `ranks_out` receives the per-query ranks (``i2t_ranks``, ``t2i_ranks``) for the bootstrap."""
    ks = tuple(int(k) for k in ks)
    lab = ["" if x is None else str(x) for x in labels]
    key, image_groups, text_groups, ranks = label_level_ranks(image_emb, text_emb, text_to_image, labels=lab,
                                                              captions=captions, key=key, chunk_size=chunk_size)
    if ranks_out is not None:
        ranks_out.update(ranks)
    s = _summary(ranks["i2t_ranks"], ranks["t2i_ranks"], ks)
    chance_i2t, chance_t2i = chance_per_query(image_groups, text_groups)
    out: dict[str, Any] = {"key": key, "protocol": LABEL_PROTOCOLS[key], "i2t": s["i2t"], "t2i": s["t2i"],
                           "rsum": s["rsum"], "mean_recall": s["rsum"] / (2 * len(ks)),
                           "chance": level_chance(image_groups, text_groups)}
    if lab and all(lab):
        arr = np.array(lab, dtype=object)
        cap_lab = arr[torch.as_tensor(text_to_image).reshape(-1).cpu().numpy()]
        # which label answers each query: the label of its best-scoring caption's image / best image
        out["top_answers"] = {"i2t": top_answers(list(cap_lab[ranks["i2t_top1"].numpy()])),
                              "t2i": top_answers(list(arr[ranks["t2i_top1"].numpy()]))}
        per: dict[str, Any] = {}
        for name in sorted(set(lab)):
            im, cm = torch.from_numpy(arr == name), torch.from_numpy(cap_lab == name)
            ls = _summary(ranks["i2t_ranks"][im], ranks["t2i_ranks"][cm], ks)
            per[name] = {"n_images": int(im.sum()), "n_captions": int(cm.sum()), "i2t": ls["i2t"], "t2i": ls["t2i"],
                         "rsum": ls["rsum"], "chance": _chance(chance_i2t[im], chance_t2i[cm])}
        out["per_label"] = per
    return out


def summary_lines(ev: dict[str, Any], per_label: bool = False) -> list[str]:
    """Plain-text lines for the terminal: the label-level recall of an eval.json dict (and, with `per_label`,
    each label's image→text R@1 against its chance level); [] when the dict has none."""
    ll = ev.get("label_level")
    if not isinstance(ll, dict) or not isinstance(ll.get("i2t"), dict):
        return []
    primary = ev.get("primary_protocol") == "label_level"
    name = "label level (same label)" if ll.get("key") == "label" else "label level (identical captions)"
    i2t, t2i = ll["i2t"], ll["t2i"]
    lines = [f"{name}{' (primary: captions repeat in this split)' if primary else ''}: i2t R@1/5/10 "
             f"{i2t['r1']:.1f}/{i2t['r5']:.1f}/{i2t['r10']:.1f} · t2i R@1/5/10 {t2i['r1']:.1f}/{t2i['r5']:.1f}/"
             f"{t2i['r10']:.1f} · RSUM {ll['rsum']:.2f} · chance i2t R@1 {ll['chance']['i2t_r1']:.1f}"]
    if per_label:
        for label, m in (ll.get("per_label") or {}).items():
            lines.append(f"  {label}: i2t R@1 {m['i2t']['r1']:.1f} (chance {m['chance']['i2t_r1']:.1f}), "
                         f"t2i R@1 {m['t2i']['r1']:.1f}")
    return lines
