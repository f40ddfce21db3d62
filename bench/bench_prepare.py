"""Benchmark `mwa prepare` decoding: images/s per core on 1-megapixel JPEGs (CPU only).

    python bench/bench_prepare.py                 # 300 photos of 1155x866, cache size 224
    python bench/bench_prepare.py --n 600 --size 384

Generates the photos in a temporary folder (textured, quality 90, ~1 MP like a phone or line-camera photo),
then measures: (1) one process, Pillow draft mode on (what prepare does); (2) one process, draft off;
(3) the full `prepare_dataset` over all cores, end to end (scan, hash, decode, resize, cache, manifest);
(4) the same command again on the unchanged folder (cache reuse). Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def make_photos(folder: Path, n: int, w: int = 1155, h: int = 866) -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    noises = [rng.normal(0, 6, (h, w, 1)).astype(np.float32) for _ in range(5)]
    rows = ["image,caption,label"]
    for i in range(n):
        base = rng.uniform(60, 200, 3)
        grad = (xx / w)[..., None] * rng.uniform(-40, 40, 3) + (yy / h)[..., None] * rng.uniform(-40, 40, 3)
        streak = np.sin(xx * rng.uniform(0.05, 0.3) + yy * rng.uniform(0, 0.05))[..., None] * 12
        arr = base + grad + streak + noises[i % 5]
        im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
        d = ImageDraw.Draw(im)
        x, y = rng.integers(50, w - 150), rng.integers(50, h - 150)
        d.line([(x, y), (x + 120, y + 60)], fill=(20, 20, 20), width=6)
        name = f"p{i:04d}.jpg"
        im.save(folder / name, quality=90)
        rows.append(f"{name},photo {i} with a scratch,{'ab'[i % 2]}")
    (folder / "captions.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def main() -> None:
    from mwa_cli.data.cache import default_workers
    from mwa_cli.data.images import open_checked, process_file, square_resize
    from mwa_cli.data.prepare import prepare_dataset

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as td:
        photos, out = Path(td) / "photos", Path(td) / "data"
        photos.mkdir()
        t = time.perf_counter()
        make_photos(photos, args.n)
        files = sorted(photos.glob("*.jpg"))
        mb = sum(f.stat().st_size for f in files) / len(files) / 1e6
        print(f"generated {len(files)} photos 1155x866 ({mb:.2f} MB each) in {time.perf_counter() - t:.1f} s")
        for f in files[:20]:  # warm the page cache and Pillow's imports
            f.read_bytes()

        staging = Path(td) / "staging.u8"
        with open(staging, "wb") as fh:
            fh.truncate(len(files) * args.size * args.size * 3)
        # Rates per core are images per CPU-second of the processes doing the work (robust to other load on
        # a shared machine); wall-clock rates are printed beside them.
        t, c = time.perf_counter(), time.process_time()
        for i, f in enumerate(files):
            r = process_file((i, str(f), f.name, args.size, 10**9, str(staging), len(files), None))
            assert "reject" not in r, r
        one_draft = (len(files) / (time.perf_counter() - t), len(files) / (time.process_time() - c))

        t, c = time.perf_counter(), time.process_time()
        for f in files:
            im, _ = open_checked(f.read_bytes(), f.name, 10**9, draft_size=None)
            square_resize(im, args.size)
        one_nodraft = (len(files) / (time.perf_counter() - t), len(files) / (time.process_time() - c))

        import sklearn.model_selection  # noqa: F401 - import once, outside the timing

        assert sklearn.model_selection

        workers = default_workers()
        t, c = time.perf_counter(), time.process_time()
        ch = resource.getrusage(resource.RUSAGE_CHILDREN)
        res = prepare_dataset(photos, out, image_size=args.size, progress=False, workers=workers,
                              tokenizer=Path(td) / "none.spm")
        e2e = time.perf_counter() - t
        ch2 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_s = (time.process_time() - c) + (ch2.ru_utime - ch.ru_utime) + (ch2.ru_stime - ch.ru_stime)
        assert res.counts["images"] == len(files)
        t = time.perf_counter()
        res2 = prepare_dataset(photos, out, image_size=args.size, progress=False, workers=workers,
                               tokenizer=Path(td) / "none.spm")
        rerun = time.perf_counter() - t
        assert res2.decoded == 0

    cpu = cpu_name()
    print(f"\nCPU: {cpu}, {os.cpu_count()} logical cores ({workers} used), Python {platform.python_version()}, "
          f"Pillow {Image.__version__}; {len(files)} JPEGs 1155x866 q90 -> {args.size}x{args.size}\n")
    print(f"load average during the run: {os.getloadavg()[0]:.1f}\n")
    print("| measurement | images/s (wall) | images per CPU-second (per core) |")
    print("|---|---:|---:|")
    print(f"| read + hash + decode + resize, 1 process, draft mode on | {one_draft[0]:.0f} | {one_draft[1]:.0f} |")
    print(f"| decode + resize, 1 process, draft mode off | {one_nodraft[0]:.0f} | {one_nodraft[1]:.0f} |")
    print(f"| `prepare_dataset` end to end, {workers} workers | {len(files) / e2e:.0f} | {len(files) / cpu_s:.0f} |")
    print(f"\nre-run on the unchanged folder (cache reused, nothing decoded): {rerun:.2f} s "
          f"(first run {e2e:.2f} s incl. process start-up)")


if __name__ == "__main__":
    main()
