"""`mwa serve --index INDEX`: a local, read-only web app over a search index, for inspectors.

Pages (server-rendered, no scripts): `/` (search box; `/?q=words` shows a photo grid with caption, score and a
why-this-match heat map), `/photo/<image_id>` (photos like that one, and the closest captions). JSON API:
`/api/search?q=&top=&nprobe=&heatmap=`, `/api/photo/<image_id>?top=&nprobe=`, `/api/status`. GET only.
The index folder is followed: when `mwa index` writes a new generation, the next request uses it.
"""
