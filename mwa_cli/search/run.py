"""One search from start to end, as `mwa search` runs it: the index and its model loaded, the query answered, and
optionally the heat maps and the HTML page. Also `mwa_cli.search(...)` in the Python API (docs/api.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def search_index(index: str | Path, text: str | None = None, *, image: str | Path | None = None, top: int = 10,
                 nprobe: int | None = None, html: str | Path | None = None, heatmap: bool = False,
                 adapter: str | Path | None = None, model: str | Path | None = None, weights: str | None = None,
                 tokenizer: str | None = None, device: str = "auto") -> dict[str, Any]:
    """The photos of `index` closest to `text` (or to the photo `image`): the dict `mwa search --json` prints.

    `html` also writes the results as one HTML file (with heat maps for a text query); `heatmap` keeps the heat
    maps' numbers in the result. `adapter` / `model` choose the run or export folder that embeds the query
    (default: the one that built the index; another adapter is refused)."""
    from mwa_cli.search.model import model_for_index
    from mwa_cli.search.query import check_query, search
    from mwa_cli.search.store import SearchIndex, read_index_meta

    check_query(text=text, image=image, top=top, nprobe=nprobe)  # bad arguments fail before any loading
    meta = read_index_meta(Path(index))
    source = model_for_index(meta, index, adapter=adapter, model=model)  # refuses another adapter, cheaply
    idx = SearchIndex.load(Path(index))
    check_query(text=text, image=image, top=top, nprobe=nprobe, index=idx)  # --nprobe needs an IVF
    sm = source.load(weights=weights, tokenizer=tokenizer, device=device, need_tokenizer=text is not None)
    result = search(idx, sm, text=text, image=image, top=top, nprobe=nprobe)
    if (heatmap or html is not None) and text is not None:
        from mwa_cli.search.heatmap import add_heatmaps

        add_heatmaps(result, idx, sm, images=html is not None)
    if html is not None:
        from mwa_cli.search.html import PhotoThumbs, write_search_html

        write_search_html(result, html, thumbs=PhotoThumbs(idx.source, idx.meta.get("max_pixels")))
        result["html"] = str(html)
        for hit in result["images"]:
            if hit.get("heat"):
                hit["heat"].pop("overlay", None)  # the page has it; the JSON keeps the numbers
    if not heatmap:
        for hit in result["images"]:
            hit.pop("heat", None)
    return result
