"""`mwa index` / `mwa search`: embed a photos folder with an adapted model and query it by text or by photo.
The package is also the API's ``mwa_cli.search(index, text, ...) -> dict``: calling it runs
`mwa_cli.search.run.search_index` (docs/api.md).

Index directory (written by `mwa index`, read by `mwa search`):

| file | content |
|---|---|
| `index.json` | `{"schema_version": 1, "generation": "<hex>", "identity": {adapter_config_sha256, adapter_weights_sha256, backbone, backbone_weights_sha256, method}, "weights", "tokenizer", "source": "<abs photos folder>", "image_size", "dim", "counts": {...}, "adapter": "<abs run dir>", "model": null or "<abs export dir>", "captions": null or {"data_dir", "dataset_hash", "count"}, "approx": null or {"kind": "ivf-flat", "ivf-fastscan", "ivf-sq8" or "ivf-pq", "file", "nlist", "nlist_option", "kind_option", "rows", "trained_rows", "library"}, "line": null or {"name", "store", "version", "pointer"} (`mwa index --line`), "created", "mwa_version", "files": {name: sha256 of each file below, checked on load}}`; written last |
| `embeddings.safetensors` | `images` float32 [M, d] (one row per distinct photo content, L2-normalised), `captions` float32 [C, d] when a caption set is held; metadata `generation` equals index.json's |
| `manifest.csv` | one row per indexed file: `path` (POSIX, relative to the photos folder), `image_id` (first 16 hex of the file's sha256), `row` (embedding row; copies of one photo share it), `size`, `mtime_ns`, `width`, `height` |
| `captions.csv` | the caption set (distinct caption texts of a prepared data dir): `caption`, `label`, `image_id`, `path`, `n_images` |
| `rejected.csv` | `path`, `row`, `reason` (same format as prepare's) |
| `approx-<generation>.faiss` | only with `mwa index --approx`: the faiss index of `mwa search --nprobe` (`mwa_cli.search.approx`), ids = photo keys (`image_key`) |

`.mwa-index` marks the folder as mwa's; `.lock` is held while `mwa index` writes it (docs/formats.md, "Rules").
A re-run embeds only files whose size or mtime changed and whose content hash is new; removed files are dropped.
An index that has an approximate index keeps it on re-runs, updated in place (docs/formats.md has the rules).
"""

from mwa_cli.callable_package import make_callable

make_callable(__name__, "mwa_cli.search.run:search_index")
