"""Search results as a table: one row per (query, rank), written as they come."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from diffrep import storage
from diffrep.index.build import IDMAP_SCHEMA
from diffrep.search.index import IndexHandle
from diffrep.search.searcher import Hits


def results_schema(regions: bool) -> pa.Schema:
    """The results' columns: query_key, rank (0 = best), id, key, url, caption, similarity;
    with region matching also global_similarity and box."""
    fields = [pa.field("query_key", pa.string()), pa.field("rank", pa.int32()), pa.field("id", pa.int64()),
              IDMAP_SCHEMA.field("key"), IDMAP_SCHEMA.field("url"), IDMAP_SCHEMA.field("caption"),
              pa.field("similarity", pa.float32())]
    if regions:
        fields += [pa.field("global_similarity", pa.float32()), pa.field("box", pa.list_(pa.float32()))]
    return pa.schema(fields)


def hits_table(handle: IndexHandle, query_keys: list[str], hits: Hits) -> pa.Table:
    """One row per (query, rank), no-result slots dropped (results_schema). With region
    matching, similarity is the region score (the ranking's), global_similarity the whole
    query's and box the normalised x0, y0, x1, y1 of the best region."""
    q, k = hits.ids.shape
    ids = hits.ids.ravel()
    valid = ids >= 0
    meta = handle.lookup(ids[valid], columns=["key", "url", "caption"])
    columns = {
        "query_key": pa.array(np.repeat(np.asarray(query_keys, dtype=object), k)[valid].tolist(), pa.string()),
        "rank": pa.array(np.tile(np.arange(k), q)[valid], pa.int32()),
        "id": pa.array(ids[valid], pa.int64()),
        "key": meta["key"], "url": meta["url"], "caption": meta["caption"],
        "similarity": pa.array(hits.sims.ravel()[valid], pa.float32()),
    }
    if hits.boxes is not None:
        columns["global_similarity"] = pa.array(hits.global_sims.ravel()[valid], pa.float32())
        columns["box"] = pa.array(list(hits.boxes.reshape(-1, 4)[valid]), pa.list_(pa.float32()))
    return pa.table(columns, schema=results_schema(hits.boxes is not None))


class ResultsWriter:
    """The results as one parquet file, written a batch at a time (one row group each)
    under a temporary name and renamed into place on success (storage.atomic_open): memory
    holds one batch's table, whatever the number of queries; a failed job leaves no file,
    and no query leaves an empty file with the schema."""

    def __init__(self, url: str, schema: pa.Schema):
        self.url, self.schema = url, schema
        self.rows = 0

    def __enter__(self) -> ResultsWriter:
        self._open = storage.atomic_open(self.url)
        self._writer = pq.ParquetWriter(self._open.__enter__(), self.schema, compression="zstd")
        return self

    def write(self, table: pa.Table) -> None:
        self._writer.write_table(table)
        self.rows += table.num_rows

    def __exit__(self, exc_type, exc, tb) -> bool | None:
        if exc_type is None:
            self._writer.close()
        return self._open.__exit__(exc_type, exc, tb)
