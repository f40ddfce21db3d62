"""Caption lengths in tokens, and the padded length of a training batch before and after bucketing.

    PYTHONPATH=$PWD python bench/text_lengths.py DATA_DIR [--tokenizer mini] [--tokenizer beit3.spm] --out x.json

DATA_DIR is a prepared data directory (its train split, as `mwa train` pads it) or a photo folder with a
captions.csv (every caption). Each tokenizer (`mini` = beit3-mini's own, or a sentencepiece file) is given the
vocabulary extension `mwa train --extend-vocab auto` (the default; --extend-vocab) would give it on these captions. For batches
of 64 and 128 drawn as the trainer draws them (one permutation per epoch, the last partial batch dropped): the
mean width before (the fixed text length) and after (the longest caption of the batch rounded up to its bucket,
mwa_cli/models/text_pad.py). Counts, not timings: the numbers do not depend on the machine.
`caption_lengths` also gives bench_train_speed.py its realistic caption lengths (`--text-lengths`).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from mwa_cli.models.text_pad import bucket_length

EPOCHS = 20  # permutations drawn per batch size: the mean width settles well before


def read_captions(folder: str | Path) -> list[str]:
    """The train captions of a prepared data dir (manifest.csv), or every caption of a photo folder."""
    folder = Path(folder)
    manifest = folder / "manifest.csv"
    source = manifest if manifest.is_file() else folder / "captions.csv"
    with open(source, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if manifest.is_file():
        rows = [r for r in rows if r.get("split") == "train"]
    return [r["caption"] for r in rows]


def load_tokenizer(name: str, text_len: int, captions: list[str], extend_vocab: str = "auto"):
    """(tokenizer, its label): `mini` or a sentencepiece path, extended as `mwa train --extend-vocab MODE` would
    for `captions`."""
    from mwa_cli.adapters.vocab import first_new_id, plan_extension
    from mwa_cli.models.presets import find_tokenizer
    from mwa_cli.models.tokenizer import Beit3Tokenizer

    path = find_tokenizer("beit3-mini", None, None) if name == "mini" else name
    tok = Beit3Tokenizer.from_file(path, max_len=text_len)
    plan = plan_extension(tok, captions, extend_vocab)
    label = "beit3-mini" if name == "mini" else Path(name).name
    if plan.enabled:
        base = first_new_id(tok)
        tok = Beit3Tokenizer(tok.sp, max_len=text_len, path=tok.path,
                             added_tokens={t: base + i for i, t in enumerate(plan.tokens)})
        label += f" + {len(plan.tokens)} added characters (--extend-vocab {extend_vocab})"
    return tok, label


def caption_lengths(captions: list[str], tokenizer) -> np.ndarray:
    """Tokens of each caption as the tokenizer formats it (<s> and </s> included, cut to its length)."""
    ids = [tokenizer.encode(c) for c in captions]
    return np.array([min(len(x) + 2, tokenizer.max_len) for x in ids], dtype=np.int64)


def batch_widths(lengths: np.ndarray, batch: int, text_len: int, epochs: int = EPOCHS, seed: int = 0) -> dict:
    """Mean width of the training batches: fixed, the exact longest caption, and the bucketed longest."""
    rng = np.random.default_rng(seed)
    longest = []
    for _ in range(epochs):
        order = rng.permutation(len(lengths))
        longest += [int(lengths[order[i:i + batch]].max()) for i in range(0, len(lengths) - batch + 1, batch)]
    if not longest:
        return {"batch": batch, "batches": 0}
    buckets = [bucket_length(n, text_len) for n in longest]
    return {"batch": batch, "batches": len(longest), "fixed": text_len, "longest_mean": float(np.mean(longest)),
            "bucketed_mean": float(np.mean(buckets)), "bucketed_widths": sorted(set(buckets)),
            "tokens_saved": 1.0 - float(np.mean(buckets)) / text_len}


def describe(lengths: np.ndarray) -> dict:
    """Distribution of the caption lengths."""
    q = np.percentile(lengths, [50, 90, 99])
    return {"captions": int(len(lengths)), "min": int(lengths.min()), "median": float(q[0]), "p90": float(q[1]),
            "p99": float(q[2]), "max": int(lengths.max()), "mean": float(lengths.mean()),
            "histogram": {int(n): int(c) for n, c in zip(*np.unique(lengths, return_counts=True))}}


def table(results: list[dict]) -> str:
    lines = ["| tokenizer | captions | median | p90 | max | batch | width before | longest (mean) | "
             "width after (mean) | widths used |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        d = r["lengths"]
        for b in r["batches"]:
            lines.append(f"| {r['tokenizer']} | {d['captions']} | {d['median']:g} | {d['p90']:g} | {d['max']} | "
                         f"{b['batch']} | {b['fixed']} | {b['longest_mean']:.1f} | {b['bucketed_mean']:.1f} | "
                         f"{', '.join(map(str, b['bucketed_widths']))} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", help="prepared data dir (train split) or photo folder with captions.csv")
    parser.add_argument("--tokenizer", action="append", help="mini or a sentencepiece file (repeatable) [mini]")
    parser.add_argument("--text-len", type=int, default=64)
    parser.add_argument("--extend-vocab", default="auto", choices=["auto", "on", "off"],
                        help="as mwa train's option [auto, its default]")
    parser.add_argument("--batches", default="64,128")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    captions = read_captions(args.data)
    results = []
    for name in args.tokenizer or ["mini"]:
        tok, label = load_tokenizer(name, args.text_len, captions, args.extend_vocab)
        lengths = caption_lengths(captions, tok)
        results.append({"tokenizer": label, "lengths": describe(lengths),
                        "batches": [batch_widths(lengths, int(b), args.text_len) for b in args.batches.split(",")]})
    if args.out:
        Path(args.out).write_text(json.dumps({"data": str(args.data), "results": results}, indent=2) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
