"""Search results as a table: one row per (query, rank), written as they come and named
(key, url, caption from the index's id map) `name_rows` rows at a time."""

from __future__ import annotations

from contextlib import suppress

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from diffrep import storage
from diffrep.index.build import IDMAP_SCHEMA
from diffrep.search.index import IndexHandle
from diffrep.search.searcher import Hits

NAMES = ["key", "url", "caption"]  # the id-map columns a result row carries


def results_schema(regions: bool) -> pa.Schema:
    """The results' columns: query_key, rank (0 = best), id, key, url, caption, similarity;
    with region matching also global_similarity and box."""
    fields = [pa.field("query_key", pa.string()), pa.field("rank", pa.int32()), pa.field("id", pa.int64()),
              *(IDMAP_SCHEMA.field(n) for n in NAMES), pa.field("similarity", pa.float32())]
    if regions:
        fields += [pa.field("global_similarity", pa.float32()), pa.field("box", pa.list_(pa.float32()))]
    return pa.schema(fields)


def hits_table(query_keys: list[str], hits: Hits) -> pa.Table:
    """One row per (query, rank), no-result slots dropped: results_schema's columns but
    the id map's (ResultsWriter adds those). With region matching, similarity is the
    region score (the ranking's), global_similarity the whole query's and box the
    normalised x0, y0, x1, y1 of the best region."""
    q, k = hits.ids.shape
    ids = hits.ids.ravel()
    valid = ids >= 0
    columns = {
        "query_key": pa.array(np.repeat(np.asarray(query_keys, dtype=object), k)[valid].tolist(), pa.string()),
        "rank": pa.array(np.tile(np.arange(k), q)[valid], pa.int32()),
        "id": pa.array(ids[valid], pa.int64()),
        "similarity": pa.array(hits.sims.ravel()[valid], pa.float32()),
    }
    if hits.boxes is not None:
        columns["global_similarity"] = pa.array(hits.global_sims.ravel()[valid], pa.float32())
        columns["box"] = pa.array(list(hits.boxes.reshape(-1, 4)[valid]), pa.list_(pa.float32()))
    return pa.table(columns)


class ResultsWriter:
    """The results as one parquet file (results_schema), written under a temporary name
    and renamed into place on success (storage.atomic_open): a failed job leaves no file,
    and no query leaves an empty file with the schema.

    Memory: up to `name_rows` result rows are buffered, then named by one id-map lookup
    (IndexHandle.lookup decodes each id-map row group holding some of them once) and
    written. Naming each search batch on its own would decode every row group a dense
    batch touches again for every batch (a query set as large as the corpus touches them
    all)."""

    def __init__(self, url: str, schema: pa.Schema, handle: IndexHandle, name_rows: int = 250_000):
        self.url, self.schema, self.handle, self.name_rows = url, schema, handle, name_rows
        self.rows = 0
        self._pending: list[pa.Table] = []
        self._pending_rows = 0

    def __enter__(self) -> ResultsWriter:
        self._open = storage.atomic_open(self.url)
        self._writer = pq.ParquetWriter(self._open.__enter__(), self.schema, compression="zstd")
        return self

    def write(self, table: pa.Table) -> None:
        """Add hits_table rows; they reach the file at the next `name_rows` boundary or at exit."""
        self._pending.append(table)
        self._pending_rows += table.num_rows
        if self._pending_rows >= self.name_rows:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        table = pa.concat_tables(self._pending)
        self._pending, self._pending_rows = [], 0
        names = self.handle.lookup(table["id"].to_numpy(), columns=NAMES)
        for name in NAMES:
            table = table.append_column(name, names[name])
        self._writer.write_table(table.select(self.schema.names).cast(self.schema))
        self.rows += table.num_rows

    def __exit__(self, exc_type, exc, tb) -> bool | None:
        if exc_type is None:
            try:
                self._flush()
                self._writer.close()
            except BaseException as failed:  # no file appears; the error propagates
                self._discard()
                self._open.__exit__(type(failed), failed, failed.__traceback__)
                raise
        else:
            self._discard()
        return self._open.__exit__(exc_type, exc, tb)

    def _discard(self) -> None:
        """Closes the writer into the temporary file that is about to be removed: left open,
        pyarrow would close it at garbage collection, writing to a closed file."""
        with suppress(Exception):
            self._writer.close()
