"""Naming many result rows in one pass over the id map: a DuckDB join, sorted back into
query order.

A search whose results outgrow one in-memory lookup (SearchConfig.name_rows) spills its
un-named rows, each with its place in the output (`seq`), to a local parquet file. They
are then named by one DuckDB query: the spill joined with every slice's id map (parquet,
read for the `id, key, url, caption` columns only) and ordered by `seq`. The id map is read
once per job, where a lookup per buffer of rows decodes every id-map row group the buffer
touches (all of them once a buffer holds more rows than the id map has groups: 3,662 at
30M vectors, 244k at 2B), again for every buffer. DuckDB's join and sort spill to disk
beyond `memory_mb`, so memory is bounded by config whatever the corpus or the result
count; the spill and DuckDB's temporaries take disk: ~40 bytes per result row.
"""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from diffrep import storage
from diffrep.index.manifest import IndexIntegrityError
from diffrep.search.index import IndexHandle

SEQ = "seq"  # the spilled rows' place in the output, int64 from 0


def idmap_urls(handle: IndexHandle) -> list[str]:
    """Every slice's id-map file, in id order."""
    return [handle.layout.idmap(s.slice_id) for s in handle.slices]


def named_batches(spill: str, handle: IndexHandle, columns: list[str], names: list[str],
                  temp_dir: str, memory_mb: int = 1024, batch_rows: int = 65536) -> Iterator[pa.RecordBatch]:
    """The rows of the local parquet `spill` (its `columns` and SEQ) in SEQ order, each
    with the id-map `names` of its `id` (null for id -1), as record batches of
    `batch_rows`: `columns` then `names`. Raises IndexIntegrityError when an id is missing
    from the id map."""
    urls = idmap_urls(handle)
    con = duckdb.connect(":memory:")
    try:
        fs, _ = storage.filesystem(urls[0])
        if not storage.is_local(fs):  # the id maps on object storage: read through fsspec
            con.register_filesystem(fs)
        else:
            urls = [storage.filesystem(u)[1] for u in urls]
        con.execute(f"SET memory_limit = '{int(memory_mb)}MB'")
        con.execute("SET temp_directory = ?", [temp_dir])
        con.execute("SET preserve_insertion_order = false")
        picked = ", ".join([*(f'h."{c}"' for c in columns), *(f'm."{n}"' for n in names)])
        # a relation's reader streams the rows; a DB-API result's would copy them all first
        reader = con.sql(
            f"SELECT {picked}, h.id >= 0 AND m.id IS NULL AS missing "
            "FROM read_parquet(?) h LEFT JOIN read_parquet(?) m ON h.id = m.id "
            f"ORDER BY h.{SEQ}", params=[spill, urls]).to_arrow_reader(batch_rows)
        for batch in reader:
            missing = batch.column(batch.num_columns - 1)
            if pc.any(missing).as_py():
                ids = batch.column(columns.index("id")).filter(missing)
                raise IndexIntegrityError(f"ids {ids[:5].to_pylist()} are in no id map of {handle.layout.base}")
            yield pa.RecordBatch.from_arrays(batch.columns[:-1], names=[*columns, *names])
    finally:
        con.close()
