"""Arrange sample_data as class folders (`<out>/<label>/*.jpg`), the layout `mwa prepare --format folders` reads.

    python scripts/make_class_folders.py /tmp/sample_folders
    mwa prepare /tmp/sample_folders --format folders --lang en --out /tmp/sample_folders_data

Every photo of sample_data/images goes to the folder of its label in sample_data/captions.csv (scratch, crack,
dent, rust, hole, missing_part, misalignment, no_defect; 55 photos each). The photos are copied byte for byte,
so the only difference from sample_data is that the captions come from templates instead of captions.csv.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
from pathlib import Path

SAMPLE_DATA = Path(__file__).resolve().parents[1] / "mwa_cli" / "sample_data"


def build_class_folders(out: Path, sample_data: Path = SAMPLE_DATA, *, only: tuple[str, ...] | None = None,
                        per_label: int | None = None) -> dict[str, int]:
    """Copy each sample photo into `out/<label>/` (the labels in `only`, the first `per_label` photos of each,
    when given); returns the number of photos per label."""
    labels: dict[str, str] = {}
    with open(sample_data / "captions.csv", encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            labels.setdefault(row["image"], row["label"])
    counts: dict[str, int] = {}
    for image, label in sorted(labels.items()):
        if (only is not None and label not in only) or counts.get(label, 0) == per_label:
            continue
        src = sample_data / image
        dst = out / label / Path(image).name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        counts[label] = counts.get(label, 0) + 1
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="folder to write (must not exist or be empty)")
    args = ap.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        print(f"error: {args.out} is not empty; give a new folder", file=sys.stderr)
        return 2
    counts = build_class_folders(args.out)
    print(f"{sum(counts.values())} photos in {len(counts)} class folders under {args.out}: "
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
