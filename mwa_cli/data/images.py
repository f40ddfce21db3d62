"""Decode one photo safely: content hash, pixel cap, EXIF orientation, any mode to RGB, square resize.

Everything a user's photo can do wrong ends up as an `ImageReject` with a reason in plain words; callers put
that reason in rejected.csv. The worker functions here run inside a process pool, so they only take and return
plain picklable values.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mwa_cli.safe_open import PHOTO_LIMIT, InputFileError, read_bytes

# Pillow's own decompression-bomb threshold (it warns above it and refuses above twice it).
DEFAULT_MAX_PIXELS = 89_478_485

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".dib", ".gif", ".tif", ".tiff", ".webp", ".ppm",
     ".pgm", ".pbm", ".pnm", ".tga", ".ico", ".jp2", ".j2k", ".heic", ".heif", ".avif"}
)

_ORIENTATION_SWAPS = {5, 6, 7, 8}


class ImageReject(Exception):
    """A photo that cannot be used; `reason` is shown to the user."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class DecodedInfo:
    image_id: str
    width: int
    height: int
    frames: int
    mode: str
    format: str


def content_id(data: bytes) -> str:
    """image_id: the first 16 hex digits of the sha256 of the file's bytes."""
    return hashlib.sha256(data).hexdigest()[:16]


def is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


def _to_rgb(im: Image.Image) -> Image.Image:
    """Grayscale, CMYK, 16-bit, float, palette and alpha images to 8-bit RGB (alpha composited on white)."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(im).astype(np.float64)
        hi = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        arr = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if mode == "F":
        arr = np.asarray(im).astype(np.float64)
        hi = 1.0 if arr.max(initial=0) <= 1.0 else 255.0
        arr = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
        mode = im.mode
        if mode == "RGB":
            return im
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    if mode == "1":
        return im.convert("L").convert("RGB")
    return im.convert("RGB")


def open_checked(data: bytes, name: str, max_pixels: int, draft_size: int | None = None):
    """Open `data` as an image; return (PIL image in RGB, EXIF-transposed, DecodedInfo).

    `draft_size`: when set, JPEGs are decoded at the smallest DCT scale still >= draft_size on both sides
    (Pillow draft mode), which is several times faster for large photos; width/height in the info are always
    those of the full-resolution, EXIF-transposed image.
    """
    if len(data) == 0:
        raise ImageReject("file is empty (0 bytes)")
    ext = Path(name).suffix.lower() or "(none)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DecompressionBombWarning etc.: we apply our own cap below
        try:
            im = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError:
            raise ImageReject(
                f"image has too many pixels (decompression-bomb guard); the limit is {max_pixels:,} pixels "
                "(raise it with --max-pixels if the photo is genuine)"
            ) from None
        except UnidentifiedImageError:
            raise ImageReject(f"not an image Pillow can read (the file name ends in {ext})") from None
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a reason, not a crash
            raise ImageReject(f"cannot open as an image: {exc}") from None
        try:
            w0, h0 = im.size
            if w0 <= 0 or h0 <= 0:
                raise ImageReject("image has zero width or height")
            if w0 * h0 > max_pixels:
                raise ImageReject(
                    f"image is {w0}x{h0} = {w0 * h0:,} pixels, over the limit of {max_pixels:,} "
                    "(decompression-bomb guard; raise it with --max-pixels if the photo is genuine)"
                )
            frames = int(getattr(im, "n_frames", 1) or 1)
            fmt = im.format or ""
            try:
                orientation = int(im.getexif().get(0x0112, 1) or 1)
            except Exception:  # noqa: BLE001 - broken EXIF: ignore orientation, keep the photo
                orientation = 1
            width, height = (h0, w0) if orientation in _ORIENTATION_SWAPS else (w0, h0)
            src_mode = im.mode
            if draft_size and fmt == "JPEG" and im.mode in ("RGB", "L"):
                im.draft(im.mode, (draft_size, draft_size))
            if frames > 1:
                im.seek(0)
            im.load()
            if orientation in range(2, 9):  # 1 = upright; exif_transpose would only copy
                try:
                    im = ImageOps.exif_transpose(im)
                except Exception:  # noqa: BLE001 - a broken EXIF block must not lose the photo
                    pass
            im = _to_rgb(im)
        except ImageReject:
            raise
        except Image.DecompressionBombError:
            raise ImageReject(
                f"image has too many pixels (decompression-bomb guard); the limit is {max_pixels:,} pixels"
            ) from None
        except (OSError, SyntaxError, ValueError, EOFError, IndexError) as exc:
            msg = str(exc)
            if "truncated" in msg.lower():
                raise ImageReject("image file is truncated (incomplete download or copy?)") from None
            raise ImageReject(f"image data is corrupt and cannot be decoded ({msg or type(exc).__name__})") from None
        except Exception as exc:  # noqa: BLE001
            raise ImageReject(f"image cannot be decoded ({type(exc).__name__}: {exc})") from None
    return im, DecodedInfo(content_id(data), width, height, frames, src_mode, fmt)


def square_resize(im: Image.Image, size: int) -> np.ndarray:
    """Plain square bicubic resize (as BEiT-3's eval transform `Resize((s, s), bicubic)`), uint8 [S,S,3].

    `reducing_gap=1.0` lets Pillow first shrink by a whole factor with a box filter (as JPEG draft mode does),
    then resample bicubically: about 20 % faster, mean difference under 0.5 grey levels from the direct resize.
    """
    if im.size != (size, size):
        im = im.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=1.0)
    arr = np.asarray(im, dtype=np.uint8)
    if arr.shape != (size, size, 3):  # pragma: no cover - _to_rgb guarantees RGB
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return arr


# --------------------------------------------------------------------------------------------- pool workers
_MEMMAPS: dict[str, np.memmap] = {}


def _staging(path: str, count: int, size: int) -> np.memmap:
    mm = _MEMMAPS.get(path)
    if mm is None or mm.shape[0] != count:
        mm = np.memmap(path, dtype=np.uint8, mode="r+", shape=(count, size, size, 3))
        _MEMMAPS.clear()
        _MEMMAPS[path] = mm
    return mm


def process_file(task: tuple) -> dict:
    """Pool worker: read, hash, validate, decode and resize one file into row `row` of a staging memmap.

    task = (row, abs_path, rel_path, size, max_pixels, staging_path, staging_count, expect_id)
    Returns a dict: rel, row, and either image_id/width/height/frames or reject (a reason).
    """
    row, abs_path, rel, size, max_pixels, staging_path, staging_count, expect_id = task
    out: dict = {"rel": rel, "row": row}
    try:
        data = read_bytes(abs_path, limit=PHOTO_LIMIT, what="photo")
    except InputFileError as exc:
        out["reject"] = exc.reason
        return out
    if expect_id is not None and content_id(data) != expect_id:
        out["reject"] = "photo changed since `mwa prepare` (content hash differs)"
        out["changed"] = True
        return out
    try:
        im, info = open_checked(data, rel, max_pixels, draft_size=size)
        arr = square_resize(im, size)
    except ImageReject as rej:
        out["reject"] = rej.reason
        out["image_id"] = content_id(data) if data else None
        return out
    _staging(staging_path, staging_count, size)[row] = arr
    out.update(image_id=info.image_id, width=info.width, height=info.height, frames=info.frames,
               mode=info.mode, format=info.format)
    return out
