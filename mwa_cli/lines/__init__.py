"""Adapter versions per production line: a versioned store, the publishing rules, and one shared backbone for all.

A line store (`mwa line add LINE --store STORE`) holds, per production line, the adapters published to it as
numbered versions and a pointer to the one in service::

    STORE/
      .mwa-lines            marker: {"kind": "lines", "mwa_version"}
      .lock                 held while `mwa line add` adds a line
      <LINE>/
        line.json           the line: its held-out set and its backbone (set at `line add --data` or first publish)
        current.json        the pointer: {"version": N, "history": [publish / rollback events]}; `mwa serve --lines`
                            watches it
        .lock               held by `mwa line publish` / `rollback` of this line (one writer at a time)
        v1/, v2/, ...       one folder per version, written whole (temporary folder + rename); version.json last,
                            holding the sha256 of every file before it
          index/            the line's search index for this version (`mwa index --line LINE`)

docs/formats.md ("Line store") lists every file and field. Modules: `store` (layout, records, integrity),
`runinfo` (what a run folder offers for publishing), `heldout` (evaluation on the line's held-out set and the
comparison rule), `publish` (publish, rollback), `shared` (one backbone in memory, each version's adapter attached
to a copy whose frozen tensors alias it), `index` (`mwa index --line`), `report` (`mwa line report`).
"""
