"""Generate mwa_cli/sample_data/: synthetic inspection photos with English and Japanese captions (deterministic).

    python scripts/make_sample_data.py                       # writes mwa_cli/sample_data/ (captions.csv + images/)
    python scripts/make_sample_data.py --contact-sheet /tmp/sheet.png   # also a labelled contact sheet

Each photo is a surface (brushed metal, painted panel, circuit board, fabric, wood) with one defect (scratch,
crack, dent, rust stain, hole, missing part, misaligned part, or none) at one cell of a 3×3 grid
(upper left ... lower right) in one of three sizes (small, medium, large). captions.csv has columns
image, caption, label, lang: two English and two Japanese phrasings per photo, all stating defect, location,
size and surface. Locations are exact (left is the viewer's left), so horizontal flips change the meaning.
The output depends only on --seed and --count: re-running gives byte-identical files.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

OUT_SIZE = 160           # saved JPEG side
R = 2 * OUT_SIZE         # drawing resolution (down-sampled for anti-aliasing)

SURFACES = {
    "metal": ("brushed metal plate", "ヘアライン金属板"),
    "painted": ("painted panel", "塗装パネル"),
    "circuit": ("circuit board", "電子基板"),
    "fabric": ("fabric sample", "布地"),
    "wood": ("wooden board", "木板"),
}
DEFECTS = {  # label: (English noun, Japanese noun)
    "scratch": ("scratch", "傷"),
    "crack": ("crack", "ひび割れ"),
    "dent": ("dent", "へこみ"),
    "rust": ("rust stain", "錆汚れ"),
    "hole": ("hole", "穴"),
    "missing_part": ("missing part", "部品の欠落"),
    "misalignment": ("misaligned part", "部品の位置ずれ"),
    "no_defect": (None, None),
}
LOCATIONS = [  # (row, col): (English, Japanese)
    ((0, 0), ("upper left", "左上")), ((0, 1), ("top centre", "上部中央")), ((0, 2), ("upper right", "右上")),
    ((1, 0), ("centre left", "左側中央")), ((1, 1), ("centre", "中央")), ((1, 2), ("centre right", "右側中央")),
    ((2, 0), ("lower left", "左下")), ((2, 1), ("bottom centre", "下部中央")), ((2, 2), ("lower right", "右下")),
]
SIZES = {"small": (0.12, "小さな"), "medium": (0.19, "中程度の"), "large": (0.28, "大きな")}


# ------------------------------------------------------------------------------------------------ textures
def _smooth(rng: np.random.Generator, cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1] at R×R (bicubic up-sampling of a small random grid)."""
    small = rng.uniform(-1, 1, size=(cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(small, "F").resize((R, R), Image.Resampling.BICUBIC))


def texture(kind: str, rng: np.random.Generator) -> Image.Image:
    yy, xx = np.mgrid[0:R, 0:R].astype(np.float32)
    if kind == "metal":
        n = rng.normal(size=(R, R + 60)).astype(np.float32)
        k = np.ones(61, np.float32) / 61
        streak = np.apply_along_axis(lambda r: np.convolve(r, k, mode="valid"), 1, n)[:, :R]
        g = rng.uniform(150, 185) + 90 * streak + 12 * _smooth(rng, 3)
        rgb = np.stack([g, g + 3, g + 8], -1)
    elif kind == "painted":
        base = np.array([[70, 110, 160], [90, 140, 90], [160, 160, 165], [180, 80, 60], [220, 200, 90]][rng.integers(5)],
                        np.float32)
        shade = 10 * _smooth(rng, 4) + rng.normal(0, 2.0, (R, R))
        rgb = base[None, None, :] + shade[..., None]
    elif kind == "circuit":
        base = np.array([30, 105, 55], np.float32)
        rgb = base[None, None, :] + (6 * _smooth(rng, 6) + rng.normal(0, 3, (R, R)))[..., None]
        im = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
        d = ImageDraw.Draw(im)
        for _ in range(14):  # copper traces: horizontal or vertical runs with one bend
            x, y = rng.integers(0, R, 2)
            x2, y2 = rng.integers(0, R, 2)
            col = (70, 150, 85)
            d.line([(x, y), (x2, y), (x2, y2)], fill=col, width=4)
        for _ in range(18):  # vias
            x, y = rng.integers(6, R - 6, 2)
            d.ellipse([x - 5, y - 5, x + 5, y + 5], fill=(200, 170, 90))
            d.ellipse([x - 2, y - 2, x + 2, y + 2], fill=(25, 60, 30))
        return im
    elif kind == "fabric":
        base = np.array([[60, 70, 110], [190, 175, 140], [120, 120, 125], [140, 60, 60]][rng.integers(4)], np.float32)
        warp = 0.5 + 0.5 * np.sin(xx * 2 * math.pi / 6)
        weft = 0.5 + 0.5 * np.sin(yy * 2 * math.pi / 6)
        checker = ((xx // 6 + yy // 6) % 2).astype(np.float32)
        v = 22 * (checker * warp + (1 - checker) * weft) - 11 + rng.normal(0, 4, (R, R))
        rgb = base[None, None, :] + v[..., None]
    elif kind == "wood":
        phase = rng.uniform(0, 6.28)
        t = xx * rng.uniform(0.10, 0.16) + 4 * np.sin(yy * 0.018 + phase) + 6 * _smooth(rng, 3)
        v = (0.5 + 0.5 * np.sin(t)) ** 3
        light = np.array([205, 160, 110], np.float32)
        dark = np.array([150, 100, 60], np.float32)
        rgb = light[None, None, :] * (1 - v[..., None]) + dark[None, None, :] * v[..., None]
        rgb += rng.normal(0, 3, (R, R))[..., None]
    else:  # pragma: no cover
        raise ValueError(kind)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


# ------------------------------------------------------------------------------------------------- defects
def _part_polygon(cx: float, cy: float, w: float, h: float, angle: float) -> list[tuple[float, float]]:
    c, s = math.cos(angle), math.sin(angle)
    pts = [(-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)]
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]


def _footprint(d: ImageDraw.ImageDraw, cx: float, cy: float, w: float, h: float) -> None:
    """Silkscreen outline and two bare solder pads: where a part belongs."""
    d.rectangle([cx - w / 2 - 4, cy - h / 2 - 4, cx + w / 2 + 4, cy + h / 2 + 4], outline=(235, 235, 235), width=2)
    pw = w * 0.22
    for sx in (-1, 1):
        x0 = cx + sx * (w / 2 - pw / 2)
        d.rectangle([x0 - pw / 2, cy - h / 2 + 2, x0 + pw / 2, cy + h / 2 - 2], fill=(205, 205, 200))


def _part(d: ImageDraw.ImageDraw, cx: float, cy: float, w: float, h: float, angle: float = 0.0) -> None:
    """A surface-mount part: dark body, silver end caps."""
    d.polygon(_part_polygon(cx, cy, w, h, angle), fill=(35, 35, 40))
    c, s = math.cos(angle), math.sin(angle)
    for sx in (-1, 1):
        ex, ey = cx + sx * (w / 2 - w * 0.09) * c, cy + sx * (w / 2 - w * 0.09) * s
        d.polygon(_part_polygon(ex, ey, w * 0.18, h, angle), fill=(200, 200, 205))


def draw_defect(im: Image.Image, label: str, cx: float, cy: float, s: float, rng: np.random.Generator,
                loc_index: int) -> Image.Image:
    d = ImageDraw.Draw(im)
    if label == "scratch":
        ang = rng.uniform(-0.6, 0.6) + (0 if rng.random() < 0.5 else math.pi / 2)
        dx, dy = math.cos(ang) * s / 2, math.sin(ang) * s / 2
        d.line([(cx - dx + 2, cy - dy + 2), (cx + dx + 2, cy + dy + 2)], fill=(40, 40, 40), width=3)
        d.line([(cx - dx, cy - dy), (cx + dx, cy + dy)], fill=(250, 250, 245), width=4)
    elif label == "crack":
        ang = rng.uniform(0, math.pi)
        pts, n = [], 9
        for k in range(n + 1):
            t = (k / n - 0.5) * s
            j = rng.uniform(-0.09, 0.09) * s
            pts.append((cx + t * math.cos(ang) - j * math.sin(ang), cy + t * math.sin(ang) + j * math.cos(ang)))
        d.line(pts, fill=(15, 12, 10), width=5, joint="curve")
        b = pts[n // 2 + 1]
        ang2 = ang + rng.choice([-1, 1]) * rng.uniform(0.6, 1.0)
        d.line([b, (b[0] + 0.3 * s * math.cos(ang2), b[1] + 0.3 * s * math.sin(ang2))], fill=(15, 12, 10), width=3)
    elif label == "dent":
        arr = np.asarray(im).astype(np.float32)
        yy, xx = np.mgrid[0:R, 0:R].astype(np.float32)
        r = s / 2
        dx, dy = (xx - cx) / r, (yy - cy) / r
        dist2 = dx * dx + dy * dy
        inside = np.clip(1 - dist2, 0, None)
        shade = (-70 * (dx + dy) / math.sqrt(2) * inside - 25 * inside) * (dist2 < 1)
        rim = 90 * np.exp(-((np.sqrt(dist2) - 1) ** 2) / 0.004)  # thin bright rim
        arr = arr + (shade - rim * 0.5 * (dx + dy < 0) + rim * 0.5 * (dx + dy >= 0))[..., None]
        im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    elif label == "rust":
        arr = np.asarray(im).astype(np.float32)
        yy, xx = np.mgrid[0:R, 0:R].astype(np.float32)
        ang = np.arctan2(yy - cy, xx - cx)
        wob = sum(rng.uniform(0.05, 0.15) * np.sin(k * ang + rng.uniform(0, 6.28)) for k in (2, 3, 5))
        dist = np.hypot(xx - cx, yy - cy) / (s / 2)
        mask = np.clip((1 + wob - dist) * 6, 0, 1)
        rust = np.stack([150 + 25 * _smooth(rng, 24), 70 + 15 * _smooth(rng, 24), 25 + 8 * _smooth(rng, 24)], -1)
        arr = arr * (1 - 0.85 * mask[..., None]) + rust * 0.85 * mask[..., None]
        im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    elif label == "hole":
        r = s / 2
        d.ellipse([cx - r - 3, cy - r - 3, cx + r + 3, cy + r + 3], fill=(225, 225, 220))
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(12, 12, 14))
        d.ellipse([cx - r * 0.8, cy - r * 0.8, cx + r * 0.5, cy + r * 0.5], fill=(28, 28, 32))
    elif label in ("missing_part", "misalignment"):
        w, h = s, s * 0.5
        # intact parts in two other cells show what a correct part looks like
        others = [i for i in range(9) if i != loc_index]
        for i in rng.choice(others, size=2, replace=False):
            (rr, cc), _ = LOCATIONS[int(i)]
            ox, oy = (cc + 0.5) * R / 3, (rr + 0.5) * R / 3
            ow, oh = R * 0.14, R * 0.07
            _footprint(d, ox, oy, ow, oh)
            _part(d, ox, oy, ow, oh)
        _footprint(d, cx, cy, w, h)
        if label == "misalignment":
            ang = rng.choice([-1, 1]) * rng.uniform(0.45, 0.7)
            _part(d, cx + rng.choice([-1, 1]) * 0.18 * w, cy + rng.choice([-1, 1]) * 0.25 * h, w, h, ang)
    return im


# ------------------------------------------------------------------------------------------------ captions
def captions(label: str, surface: str, loc: int, size: str) -> list[tuple[str, str]]:
    s_en, s_ja = SURFACES[surface]
    if label == "no_defect":
        return [("en", f"a {s_en} with no defects"), ("en", f"clean {s_en} surface, no visible defect"),
                ("ja", f"欠陥のない{s_ja}"), ("ja", f"{s_ja}の表面、異常なし")]
    d_en, d_ja = DEFECTS[label]
    (_, (l_en, l_ja)) = LOCATIONS[loc]
    where = "in the centre of" if l_en == "centre" else f"on the {l_en} of"
    art = "an" if size[0] in "aeiou" else "a"
    return [("en", f"{art} {size} {d_en} {where} a {s_en}"),
            ("en", f"{s_en} with {art} {size} {d_en} in the {l_en} area"),
            ("ja", f"{l_ja}に{SIZES[size][1]}{d_ja}がある{s_ja}"),
            ("ja", f"{s_ja}の{l_ja}に{SIZES[size][1]}{d_ja}")]


def make_one(index: int, label: str, seed: int) -> tuple[bytes, str, int, str]:
    rng = np.random.default_rng([seed, index])
    surface = list(SURFACES)[index % len(SURFACES)]
    loc = int(rng.integers(9))
    size = list(SIZES)[int(rng.integers(3))]
    im = texture(surface, rng)
    (r, c), _ = LOCATIONS[loc]
    jit = R / 3 * 0.08
    cx = (c + 0.5) * R / 3 + rng.uniform(-jit, jit)
    cy = (r + 0.5) * R / 3 + rng.uniform(-jit, jit)
    if label != "no_defect":
        im = draw_defect(im, label, cx, cy, SIZES[size][0] * R, rng, loc)
    im = im.filter(ImageFilter.GaussianBlur(0.6)).resize((OUT_SIZE, OUT_SIZE), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=85, optimize=True)
    return buf.getvalue(), surface, loc, size


def generate(out: Path, count: int = 440, seed: int = 2024) -> dict:
    labels = list(DEFECTS)
    if out.exists():
        shutil.rmtree(out / "images", ignore_errors=True)
        (out / "captions.csv").unlink(missing_ok=True)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    total = 0
    for i in range(count):
        label = labels[i % len(labels)]
        data, surface, loc, size = make_one(i, label, seed)
        name = f"images/{i:04d}_{label}.jpg"
        (out / name).write_bytes(data)
        total += len(data)
        for lang, cap in captions(label, surface, loc, size):
            rows.append({"image": name, "caption": cap, "label": label, "lang": lang})
    with open(out / "captions.csv", "w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["image", "caption", "label", "lang"], lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return {"images": count, "captions": len(rows), "bytes": total + (out / "captions.csv").stat().st_size}


def contact_sheet(out: Path, dest: Path, n: int = 48, cols: int = 8) -> None:
    """A grid of the first n photos, each with its first English caption underneath."""
    import pandas as pd

    df = pd.read_csv(out / "captions.csv")
    first = df[df["lang"] == "en"].drop_duplicates("image").head(n)
    cw, ch = OUT_SIZE * 2, OUT_SIZE * 2 + 44
    sheet = Image.new("RGB", (cols * cw, math.ceil(len(first) / cols) * ch), "white")
    d = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for k, (_, row) in enumerate(first.iterrows()):
        im = Image.open(out / row["image"]).resize((OUT_SIZE * 2, OUT_SIZE * 2))
        x, y = (k % cols) * cw, (k // cols) * ch
        sheet.paste(im, (x, y))
        words, lines, cur = row["caption"].split(), [], ""
        for wd in words:
            if len(cur) + len(wd) > 46:
                lines.append(cur)
                cur = wd
            else:
                cur = f"{cur} {wd}".strip()
        lines.append(cur)
        for j, line in enumerate(lines[:3]):
            d.text((x + 3, y + OUT_SIZE * 2 + 2 + 13 * j), line, fill="black", font=font)
    sheet.save(dest)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "mwa_cli" / "sample_data")
    ap.add_argument("--count", type=int, default=440)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--contact-sheet", type=Path, default=None)
    args = ap.parse_args()
    info = generate(args.out, args.count, args.seed)
    print(f"wrote {info['images']} images, {info['captions']} captions, {info['bytes'] / 1e6:.2f} MB to {args.out}")
    if args.contact_sheet:
        contact_sheet(args.out, args.contact_sheet)
        print(f"contact sheet: {args.contact_sheet}")


if __name__ == "__main__":
    main()
