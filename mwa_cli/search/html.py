"""Search results as ONE self-contained HTML file: Jinja2 with autoescape (file names and captions are user data
and appear as text, never as markup), a CSP meta tag that forbids scripts and external requests, and thumbnails
embedded as JPEG ``data:`` URIs made by the report's gallery code (``DataDir.thumbnail``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mwa_cli import __version__
from mwa_cli.fileio import atomic_write_text
from mwa_cli.report.gallery import DataDir
from mwa_cli.templating import get_template

TEMPLATE = "search.html.j2"


class PhotoThumbs(DataDir):
    """The gallery's thumbnail maker, fed from a photos folder (decoded with prepare's rules) instead of a data
    dir's image cache. Keys are paths relative to `root`, or absolute paths for the query photo."""

    def __init__(self, root: Path, max_pixels: int | None = None):  # noqa: D107 - no data dir to read
        self.root = Path(root)
        self.max_pixels = max_pixels
        self._thumbs: dict[str, str | None] = {}

    def _load_image(self, key: str):
        from mwa_cli.data.images import DEFAULT_MAX_PIXELS, ImageReject, open_checked

        path = Path(key) if Path(key).is_absolute() else self.root / key
        try:
            root = self.root.resolve()
            if not Path(key).is_absolute() and not path.resolve().is_relative_to(root):
                return None  # never read outside the indexed folder
            data = path.read_bytes()
            im, _ = open_checked(data, path.name, int(self.max_pixels or DEFAULT_MAX_PIXELS), draft_size=128)
        except (OSError, ImageReject):
            return None
        return im


def render_search_html(result: dict[str, Any], *, thumbs: PhotoThumbs | None = None) -> str:
    thumbs = thumbs if thumbs is not None else PhotoThumbs(Path(result.get("source") or "."))
    images = [dict(hit, thumb=thumbs.thumbnail(hit["path"]) if hit.get("path") else None)
              for hit in result.get("images", [])]
    query = dict(result["query"])
    if query["kind"] == "image":
        query["thumb"] = thumbs.thumbnail(str(Path(query["path"]).expanduser().resolve()))
    return get_template(TEMPLATE).render(query=query, images=images, captions=result.get("captions"),
                                         result=result, mwa_version=__version__)


def write_search_html(result: dict[str, Any], path: str | Path, *, thumbs: PhotoThumbs | None = None) -> Path:
    path = Path(path)
    html = render_search_html(result, thumbs=thumbs)
    atomic_write_text(path, html)
    return path
