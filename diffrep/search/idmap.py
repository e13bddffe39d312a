"""Random access to an index's id maps (id -> key, url, caption, shard, row) by row group.

Each slice's id map is one parquet file in id order, written in row groups of
IDMAP_ROW_GROUP rows (diffrep.index.build). A lookup reads only the row groups that hold
its ids, and only the columns asked for; decoded groups are kept in a least-recently-used
cache of at most IDMAP_CACHE_BYTES. Memory is therefore bounded by config, whatever the
corpus or the slice size (LAION-2B's config has 10M-row slices: reading a whole slice to
name one hit would be 2 GB). An index built before row groups existed has one group per
slice and is read a slice at a time, as before. Lookups are serialised by a lock: one
reader may serve several threads (diffrep serve), and its cache and open files are shared.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from diffrep import storage
from diffrep.index.build import IDMAP_SCHEMA
from diffrep.index.layout import IndexLayout
from diffrep.index.manifest import IndexIntegrityError
from diffrep.index.plan import SliceSpec

IDMAP_CACHE_BYTES = 128 << 20  # decoded id-map row groups kept per reader (LRU)
IDMAP_OPEN_FILES = 16  # id-map files whose footer (row-group layout) a reader keeps open


class IdMapReader:
    """Looks up id-map rows of global ids, reading only the row groups that hold them."""

    def __init__(self, layout: IndexLayout, slices: list[SliceSpec],
                 cache_bytes: int = IDMAP_CACHE_BYTES):
        self.layout, self.slices, self.cache_bytes = layout, slices, cache_bytes
        self._starts = np.array([s.id_start for s in slices], np.int64)
        self._files: OrderedDict[int, tuple[pq.ParquetFile, np.ndarray, object]] = OrderedDict()
        self._groups: OrderedDict[tuple, pa.Table] = OrderedDict()
        self.cached_bytes = 0
        self.groups_read = 0  # row groups decoded so far (a benchmark's and a test's counter)
        self._lock = threading.Lock()

    def lookup(self, ids: np.ndarray, columns: Sequence[str] | None = None) -> pa.Table:
        """Rows of `ids` in the order given, with `columns` of the id map (all of
        IDMAP_SCHEMA by default); id -1 (no result) gives a row of nulls. Raises
        IndexError for ids outside [0, ntotal)."""
        ids = np.asarray(ids, np.int64).ravel()
        names = list(IDMAP_SCHEMA.names if columns is None else columns)
        unknown = [n for n in names if n not in IDMAP_SCHEMA.names]
        if unknown:
            raise ValueError(f"unknown id-map columns {unknown}; known: {IDMAP_SCHEMA.names}")
        schema = pa.schema([IDMAP_SCHEMA.field(n) for n in names])
        valid = np.nonzero(ids >= 0)[0]
        ntotal = self.slices[-1].id_start + self.slices[-1].count if self.slices else 0
        if len(valid) and ids[valid].max() >= ntotal:
            raise IndexError(f"ids out of range [0, {ntotal})")
        if not len(valid):
            return pa.table({n: pa.nulls(len(ids), schema.field(n).type) for n in names}, schema=schema)
        order = valid[np.argsort(ids[valid], kind="stable")]
        wanted = ids[order]
        parts = []
        which = np.searchsorted(self._starts, wanted, side="right") - 1
        with self._lock:
            for si, lo, hi in _runs(which):
                parts.append(self._slice_rows(si, wanted[lo:hi] - self.slices[si].id_start, names))
        gathered = pa.concat_tables(parts)
        # gathered row j belongs at position order[j]; -1 ids take a null index (a null row)
        index = np.zeros(len(ids), np.int64)
        index[order] = np.arange(len(order))
        is_null = np.ones(len(ids), bool)
        is_null[valid] = False
        return gathered.take(pa.array(index, mask=is_null))

    def _slice_rows(self, slice_index: int, offsets: np.ndarray, names: list[str]) -> pa.Table:
        """Rows at sorted `offsets` within one slice's id map."""
        spec = self.slices[slice_index]
        group_starts = self._file(spec)[1]
        group = np.searchsorted(group_starts, offsets, side="right") - 1
        parts = []
        for g, lo, hi in _runs(group):
            sel = offsets[lo:hi] - group_starts[g]
            parts.append(self._group(spec, int(g), int(group_starts[g]), names).take(pa.array(sel)))
        return pa.concat_tables(parts)

    def _file(self, spec: SliceSpec) -> tuple[pq.ParquetFile, np.ndarray]:
        """The slice's open id-map file and the first row of each of its row groups."""
        if spec.slice_id in self._files:
            self._files.move_to_end(spec.slice_id)
            return self._files[spec.slice_id]
        fs, path = storage.filesystem(self.layout.idmap(spec.slice_id))
        source = fs.open(path, "rb")
        handle = pq.ParquetFile(source)
        rows = [handle.metadata.row_group(g).num_rows for g in range(handle.metadata.num_row_groups)]
        if sum(rows) != spec.count:
            raise IndexIntegrityError(f"{path} has {sum(rows)} rows, the manifest's slice {spec.slice_id} "
                                      f"has {spec.count}")
        self._files[spec.slice_id] = (handle, np.cumsum([0] + rows[:-1]), source)
        while len(self._files) > IDMAP_OPEN_FILES:
            self._files.popitem(last=False)[1][2].close()
        return self._files[spec.slice_id]

    def _group(self, spec: SliceSpec, g: int, first_row: int, names: list[str]) -> pa.Table:
        key = (spec.slice_id, g, tuple(names))
        if key in self._groups:
            self._groups.move_to_end(key)
            return self._groups[key]
        table = self._file(spec)[0].read_row_group(g, columns=["id", *names])
        self.groups_read += 1
        ids = table["id"]
        first = spec.id_start + first_row
        if ids[0].as_py() != first or ids[-1].as_py() != first + len(table) - 1:
            raise IndexIntegrityError(
                f"id map of slice {spec.slice_id}, row group {g}: ids {ids[0]}..{ids[-1]}, expected "
                f"{first}..{first + len(table) - 1} (the id map is not in id order)")
        table = table.select(names)
        self._groups[key] = table
        self.cached_bytes += table.nbytes
        while self.cached_bytes > self.cache_bytes and len(self._groups) > 1:
            self.cached_bytes -= self._groups.popitem(last=False)[1].nbytes
        return table

    def close(self) -> None:
        """Close the open files and empty the cache (the reader stays usable)."""
        for _, _, source in self._files.values():
            source.close()
        self._files.clear()
        self._groups.clear()
        self.cached_bytes = 0

    def __getstate__(self) -> dict:
        """Pickled (sent to a Ray worker) without its open files, cache and lock."""
        state = self.__dict__.copy()
        state.update(_files=OrderedDict(), _groups=OrderedDict(), cached_bytes=0)
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


def _runs(sorted_values: np.ndarray) -> list[tuple[int, int, int]]:
    """(value, start, end) of each run of equal values in a sorted array."""
    values, starts = np.unique(sorted_values, return_index=True)
    ends = np.append(starts[1:], len(sorted_values))
    return list(zip(values.tolist(), starts.tolist(), ends.tolist(), strict=True))
