"""An index's embedding rows → its files (`RowPaths`) and photo ids, grouped from manifest.csv with numpy: a
Python list per row would cost about a second at a million photos, on every `mwa search`."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import overload

import numpy as np


class RowPaths(Sequence[list[str]]):
    """row → the paths of its files in manifest order (the first is the canonical one), each answered as a new
    list sliced from one flat list of all paths grouped by row."""

    def __init__(self, paths: list[str], starts: np.ndarray):
        self._paths = paths
        self._starts = starts  # row r's paths are paths[starts[r]:starts[r + 1]]

    def __len__(self) -> int:
        return len(self._starts) - 1

    @overload
    def __getitem__(self, r: int) -> list[str]: ...

    @overload
    def __getitem__(self, r: slice) -> list[list[str]]: ...

    def __getitem__(self, r: int | slice) -> list[str] | list[list[str]]:
        if isinstance(r, slice):
            return [self[i] for i in range(*r.indices(len(self)))]
        r = operator.index(r)
        n = len(self)
        if not -n <= r < n:
            raise IndexError(f"row {r} out of range for {n} rows")
        r %= n
        return self._paths[int(self._starts[r]):int(self._starts[r + 1])]


def group_rows(rows: np.ndarray, paths: Sequence[str], image_ids: Sequence[str],
               n: int) -> tuple[RowPaths, list[str]]:
    """(row → paths, row → photo id) of a manifest's files, given each file's row (every row in 0..n-1 held by
    at least one file: the caller checks). A row's id is that of its last file, as all its files share it."""
    rows = np.asarray(rows, dtype=np.int64)
    path_arr = np.asarray(paths, dtype=object)
    id_arr = np.asarray(image_ids, dtype=object)
    if len(rows) == n and bool((rows == np.arange(n)).all()):  # one file per row, in row order: the common case
        return RowPaths(path_arr.tolist(), np.arange(n + 1)), id_arr.tolist()
    order = np.argsort(rows, kind="stable")  # stable: a row's files keep their manifest order
    starts = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=starts[1:])
    return RowPaths(path_arr[order].tolist(), starts), id_arr[order][starts[1:] - 1].tolist()
