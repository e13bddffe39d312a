"""Search results as a table: one row per (query, rank), named (key, url, caption from the
index's id map) by one lookup, or past `name_rows` rows by one pass over the id map."""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
from contextlib import suppress

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from diffrep import storage
from diffrep.index.build import IDMAP_SCHEMA
from diffrep.progress import PartTimes
from diffrep.search.index import IndexHandle
from diffrep.search.naming import SEQ, named_batches
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

    Naming (key, url, caption from the id map): up to `name_rows` result rows are held in
    memory and named at exit by one id-map lookup (IndexHandle.lookup: the row groups that
    hold them, each decoded once). Past `name_rows`, the rows spill un-named to a local
    parquet file under `spill_dir` (default: beside a local output, else the system's
    temporary directory) and are named at exit in one pass over the id map
    (diffrep.search.naming: a DuckDB join in at most `memory_mb`). A lookup per
    `name_rows` rows would decode every id-map row group again for each of them once the
    rows outnumber the groups: its cost per result row grew with the corpus."""

    def __init__(self, url: str, schema: pa.Schema, handle: IndexHandle, name_rows: int = 250_000,
                 spill_dir: str | None = None, memory_mb: int = 1024):
        self.url, self.schema, self.handle, self.name_rows = url, schema, handle, name_rows
        self.memory_mb = memory_mb
        self.rows = 0
        self.times = PartTimes()  # seconds spilling, naming (lookup or join) and writing
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._spill: pq.ParquetWriter | None = None
        fs, path = storage.filesystem(url)
        if spill_dir is None and storage.is_local(fs):
            spill_dir = os.path.dirname(path)
            for stale in glob.glob(os.path.join(spill_dir, f"{self.spill_prefix}*")):
                shutil.rmtree(stale, ignore_errors=True)  # a killed run's spill of this output
        self._spill_dir = spill_dir

    @property
    def spill_prefix(self) -> str:
        """The name its spill folder starts with: the output's name, then a temporary's."""
        return f"{self.url.rsplit('/', 1)[-1]}.naming{storage.TMP_MARKER}"

    def __enter__(self) -> ResultsWriter:
        self._open = storage.atomic_open(self.url)
        self._writer = pq.ParquetWriter(self._open.__enter__(), self.schema, compression="zstd")
        return self

    def write(self, table: pa.Table) -> None:
        """Add hits_table rows (results_schema's columns but the id map's); they reach the
        file, named, at exit."""
        if self._spill is None and self._pending_rows + table.num_rows <= self.name_rows:
            self._pending.append(table)
            self._pending_rows += table.num_rows
            return
        with self.times.part("spilling"):
            if self._spill is None:
                self._start_spill(table.schema)
            for part in [*self._pending, table]:
                seq = pa.array(np.arange(self.rows, self.rows + part.num_rows, dtype=np.int64))
                self._spill.write_table(part.append_column(SEQ, seq))
                self.rows += part.num_rows
            self._pending, self._pending_rows = [], 0

    def _start_spill(self, schema: pa.Schema) -> None:
        if self._spill_dir is not None:
            os.makedirs(self._spill_dir, exist_ok=True)
        self._temp = tempfile.TemporaryDirectory(prefix=self.spill_prefix, dir=self._spill_dir)
        self._spill_path = os.path.join(self._temp.name, "unnamed.parquet")
        self._spill = pq.ParquetWriter(self._spill_path, schema.append(pa.field(SEQ, pa.int64())))

    def _finish(self) -> None:
        if self._spill is None:  # every row in memory: one lookup of the groups they touch
            if not self._pending:
                return
            table = pa.concat_tables(self._pending)
            with self.times.part("naming"):
                names = self.handle.lookup(table["id"].to_numpy(), columns=NAMES)
            with self.times.part("writing"):
                for name in NAMES:
                    table = table.append_column(name, names[name])
                self._writer.write_table(table.select(self.schema.names).cast(self.schema))
            self.rows += table.num_rows
            return
        self._spill.close()
        columns = [n for n in self.schema.names if n not in NAMES]
        batches = named_batches(self._spill_path, self.handle, columns, NAMES, self._temp.name, self.memory_mb)
        while True:
            with self.times.part("naming"):
                batch = next(batches, None)
            if batch is None:
                return
            with self.times.part("writing"):
                table = pa.Table.from_batches([batch]).select(self.schema.names).cast(self.schema)
                self._writer.write_table(table)

    def __exit__(self, exc_type, exc, tb) -> bool | None:
        try:
            if exc_type is None:
                try:
                    self._finish()
                    self._writer.close()
                except BaseException as failed:  # no file appears; the error propagates
                    self._discard()
                    self._open.__exit__(type(failed), failed, failed.__traceback__)
                    raise
            else:
                self._discard()
            return self._open.__exit__(exc_type, exc, tb)
        finally:
            if self._spill is not None:
                with suppress(Exception):
                    self._spill.close()
                self._temp.cleanup()

    def _discard(self) -> None:
        """Closes the writer into the temporary file that is about to be removed: left open,
        pyarrow would close it at garbage collection, writing to a closed file."""
        with suppress(Exception):
            self._writer.close()
