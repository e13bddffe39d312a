"""Partitions, and the routed files that move rows between them (a shuffle on files).

Partitioned steps (the dedup job's end, the index's key index) run as rounds of parallel
tasks, each holding one *partition*, e.g. the ids in [p * partition_ids,
(p + 1) * partition_ids). A task that produces rows for other
partitions writes ONE routed file: a parquet file whose row groups each hold one
destination partition's rows, the destinations listed in the file's footer. A task
reading its inbound rows opens every routed file of the previous step and reads only its
own row groups, so
memory holds one partition's rows, and a step writes as many files as it has tasks (not
tasks x partitions).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from diffrep import storage

DESTS_KEY = b"diffrep.dests"


def num_partitions(ntotal: int, partition_ids: int) -> int:
    """Partitions covering ids [0, ntotal) (at least one)."""
    return max(1, math.ceil(ntotal / partition_ids))


def partition_of(ids: np.ndarray, partition_ids: int) -> np.ndarray:
    return np.asarray(ids, np.int64) // partition_ids


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: uint64 -> uint64, a bijection in which every output bit
    depends on every input bit (consecutive inputs give unrelated outputs)."""
    x = np.asarray(x, np.uint64).copy()
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x


def hashed_partition_of(ids: np.ndarray, num_parts: int) -> np.ndarray:
    """Partition in [0, num_parts) of each id by a hash of the id: even whatever the ids'
    spread over their range (partition_of gives each range of ids one partition)."""
    return (mix64(np.asarray(ids, np.int64).view(np.uint64)) % np.uint64(num_parts)).astype(np.int64)


class RoutedWriter:
    """Writes one routed file: rows with their destination partitions, buffered up to
    `buffer_rows`, then written as one row group per destination (a destination may get
    several row groups, one per flush). Memory: the buffer. The file appears complete on
    close (atomically); the list of destinations goes into its footer."""

    def __init__(self, url: str, schema: pa.Schema, buffer_rows: int = 4_000_000):
        self.url, self.schema, self.buffer_rows = url, schema, buffer_rows
        self.tables: list[pa.Table] = []
        self.dests: list[np.ndarray] = []
        self.buffered = 0
        self.row_group_dests: list[int] = []
        self.counts: dict[int, int] = {}
        self._target = storage.atomic_open(url)
        self._writer = pq.ParquetWriter(self._target.__enter__(), schema, compression="zstd")

    def write(self, table: pa.Table, dest: np.ndarray) -> None:
        self.tables.append(table)
        self.dests.append(np.asarray(dest, np.int64))
        self.buffered += len(table)
        if self.buffered >= self.buffer_rows:
            self._flush()

    def _flush(self) -> None:
        if not self.buffered:
            return
        dest = np.concatenate(self.dests)
        order = np.argsort(dest, kind="stable")
        table = pa.concat_tables(self.tables).take(pa.array(order))
        dest = dest[order]
        self.tables, self.dests, self.buffered = [], [], 0
        dests, starts, counts = np.unique(dest, return_index=True, return_counts=True)
        for d, start, count in zip(dests.tolist(), starts.tolist(), counts.tolist(), strict=True):
            self._writer.write_table(table.slice(start, count).cast(self.schema), row_group_size=count)
            self.row_group_dests.append(d)
            self.counts[d] = self.counts.get(d, 0) + count

    def close(self) -> dict[int, int]:
        """Finish the file; returns rows per destination."""
        self._flush()
        self._writer.add_key_value_metadata({DESTS_KEY: json.dumps(self.row_group_dests).encode()})
        self._writer.close()
        self._target.__exit__(None, None, None)
        return self.counts

    def __enter__(self) -> RoutedWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        self._writer.close()
        with contextlib.suppress(BaseException):  # removes the temporary, re-raises exc
            self._target.__exit__(exc_type, exc, tb)


def write_routed(url: str, table: pa.Table, dest: np.ndarray) -> dict[int, int]:
    """Write `table`'s rows grouped by destination partition `dest` (one int per row) as
    one routed file (atomically); returns rows per destination."""
    with RoutedWriter(url, table.schema, buffer_rows=max(len(table), 1)) as writer:
        writer.write(table, dest)
    return writer.counts


def read_inbound(urls: Sequence[str], partition: int, schema: pa.Schema) -> pa.Table:
    """The rows routed to `partition` by every file in `urls`."""
    parts = []
    for url in urls:
        fs, path = storage.filesystem(url)
        with fs.open(path, "rb") as f:
            pf = pq.ParquetFile(f)
            dests = json.loads(pf.metadata.metadata[DESTS_KEY])
            mine = [i for i, d in enumerate(dests) if d == partition]
            if mine:
                parts.append(pf.read_row_groups(mine).replace_schema_metadata(None))
    if not parts:
        return schema.empty_table()
    return pa.concat_tables([p.cast(schema) for p in parts])
