"""mwa prepare: image decoding (EXIF, modes, corrupt files, pixel cap, animation, duplicates)."""

from __future__ import annotations

import io
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mwa_cli.data.cache import ImageCache
from mwa_cli.data.images import ImageReject, open_checked
from mwa_cli.data.prepare import prepare_dataset


def noise(w: int, h: int, seed: str) -> np.ndarray:
    rng = np.random.default_rng(zlib.crc32(seed.encode()))
    return rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)


def table(p: Path, names: list[str]) -> None:
    (p / "captions.csv").write_text("image,caption\n" + "".join(f"{n},caption of {n}\n" for n in names), encoding="utf-8")


def run(p: Path, out: Path, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("workers", 1)
    kw.setdefault("image_size", 16)
    return prepare_dataset(p, out, **kw)


def reasons(out: Path) -> dict[str, str]:
    r = pd.read_csv(out / "rejected.csv", dtype=str, keep_default_na=False)
    return {p: why for p, why, row in zip(r["path"], r["reason"], r["row"]) if row == ""}


def test_exif_orientation_applied(tmp_path):
    # left half red, right half blue, 40x20; orientation 6 = rotate 90° clockwise for display
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)
    arr[:, 20:] = (0, 0, 255)
    im = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6
    p = tmp_path / "p"
    p.mkdir()
    im.save(p / "rot.jpg", quality=95, exif=exif.tobytes())
    table(p, ["rot.jpg"])
    run(p, tmp_path / "out", image_size=16)
    m = pd.read_csv(tmp_path / "out" / "manifest.csv")
    assert (m["width"][0], m["height"][0]) == (20, 40)  # transposed size
    row = ImageCache(tmp_path / "out", 16).array[0].astype(int)
    # after rotating clockwise the red (left) half is on top
    assert row[2, 8, 0] > 200 and row[2, 8, 2] < 60
    assert row[13, 8, 2] > 200 and row[13, 8, 0] < 60


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("case", ["L", "CMYK", "I;16", "P", "PA", "RGBA", "LA", "1", "F"])
def test_modes_to_rgb(case):
    base = Image.fromarray(noise(24, 18, case))
    if case == "CMYK":
        data = _save(base.convert("CMYK"), "JPEG")
    elif case == "I;16":
        arr = (np.linspace(0, 65535, 24 * 18).reshape(18, 24)).astype(np.uint16)
        data = _save(Image.fromarray(arr), "PNG")
    elif case == "P":
        data = _save(base.convert("P"), "PNG")
    elif case == "PA":
        p = base.convert("P")
        data = _save(p, "PNG", transparency=0)
    elif case == "RGBA":
        rgba = base.convert("RGBA")
        rgba.putalpha(0)  # fully transparent: composited on white
        data = _save(rgba, "PNG")
    elif case == "F":
        data = _save(Image.fromarray(np.full((18, 24), 0.5, np.float32)), "TIFF")
    else:
        data = _save(base.convert(case), "PNG")
    im, info = open_checked(data, f"x.{case}", 10**9)
    assert im.mode == "RGB" and im.size == (24, 18) and (info.width, info.height) == (24, 18)
    arr = np.asarray(im)
    if case == "RGBA":
        assert (arr == 255).all()
    if case == "I;16":  # 16-bit scaled to 8-bit, not clipped to white
        assert arr.min() < 10 and arr.max() > 245 and 100 < arr.mean() < 155
    if case == "F":
        assert abs(int(arr[0, 0, 0]) - 128) <= 1


def test_bad_images_rejected_with_reasons(tmp_path):
    p = tmp_path / "p"
    p.mkdir()
    good = _save(Image.fromarray(noise(64, 48, "g")), "JPEG")
    (p / "good.jpg").write_bytes(good)
    (p / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (p / "zero.jpg").write_bytes(b"")
    (p / "text.jpg").write_text("this is not an image", encoding="utf-8")
    (p / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (p / "big.png").write_bytes(_save(Image.new("1", (300, 300)), "PNG"))
    frames = [Image.fromarray(noise(20, 20, str(k))) for k in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    (p / "anim.gif").write_bytes(buf.getvalue())
    names = ["good.jpg", "truncated.jpg", "zero.jpg", "text.jpg", "corrupt.png", "big.png", "anim.gif"]
    table(p, names)
    res = run(p, tmp_path / "out", max_pixels=50_000)
    m = pd.read_csv(tmp_path / "out" / "manifest.csv")
    assert sorted(m["path"]) == ["anim.gif", "good.jpg"]
    why = reasons(tmp_path / "out")
    assert "truncated" in why["truncated.jpg"]
    assert "empty (0 bytes)" in why["zero.jpg"]
    assert "not an image" in why["text.jpg"] and ".jpg" in why["text.jpg"]
    assert "corrupt" in why["corrupt.png"] or "not an image" in why["corrupt.png"]
    assert "90,000 pixels" in why["big.png"] and "--max-pixels" in why["big.png"]
    assert res.report["multi_frame_first_frame_used"] == ["anim.gif"]
    assert any("first frame" in n for n in res.notes)
    # every rejected image's caption row is listed too, and everything adds up
    r = pd.read_csv(tmp_path / "out" / "rejected.csv", dtype=str, keep_default_na=False)
    assert (r["row"] != "").sum() == 5
    assert res.counts["files"]["used"] + res.counts["files"]["rejected"] == res.counts["files"]["found"] == 7
    # a higher cap accepts the large image
    run(p, tmp_path / "out", max_pixels=100_000)
    assert "big.png" in set(pd.read_csv(tmp_path / "out" / "manifest.csv")["path"])


def test_pillow_bomb_error_is_a_reason():
    data = _save(Image.new("1", (400, 400)), "PNG")
    with pytest.raises(ImageReject, match="pixels"):
        open_checked(data, "bomb.png", 1000)


def test_duplicates_merged_captions_kept(tmp_path):
    p = tmp_path / "p"
    p.mkdir()
    data = _save(Image.fromarray(noise(30, 30, "d")), "PNG")
    (p / "b.png").write_bytes(data)
    (p / "a_copy.png").write_bytes(data)
    (p / "captions.csv").write_text("image,caption\nb.png,one\na_copy.png,two\nb.png,one\n", encoding="utf-8")
    res = run(p, tmp_path / "out")
    m = pd.read_csv(tmp_path / "out" / "manifest.csv")
    assert m["image_id"].nunique() == 1 and sorted(m["caption"]) == ["one", "two"]
    assert set(m["path"]) == {"a_copy.png"}  # first path in sorted order
    dup = res.report["duplicates_merged"]
    assert dup["images"] == 1 and dup["captions"] == 1 and dup["groups"] == [["a_copy.png", "b.png"]]
    assert res.counts["rows"]["duplicates_merged"] == 1


def test_draft_mode_keeps_full_size_info():
    data = _save(Image.fromarray(noise(1000, 800, "big")), "JPEG", quality=80)
    im, info = open_checked(data, "x.jpg", 10**9, draft_size=64)
    assert (info.width, info.height) == (1000, 800)
    assert im.size[0] >= 64 and im.size[1] >= 64 and im.size[0] < 1000


@pytest.mark.parametrize("workers", [1, 2])
def test_decoding_reports_its_progress_through_the_callback(tmp_path, workers):
    """(0, n) before the first photo, then (k, n) after each: serially and through the process pool."""
    from mwa_cli.data.cache import _POOL_MIN_FILES, decode_files

    n = _POOL_MIN_FILES if workers > 1 else 3
    for k in range(n):
        Image.new("RGB", (10, 10), (k, 0, 0)).save(tmp_path / f"{k}.png")
    files = [(str(tmp_path / f"{k}.png"), f"{k}.png", None) for k in range(n)]
    calls: list[tuple[int, int]] = []
    decode_files(files, 8, tmp_path / "stage.u8", progress=lambda done, total: calls.append((done, total)),
                 workers=workers)
    assert calls == [(k, n) for k in range(n + 1)]
