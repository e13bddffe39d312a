"""Range partitions of corpus ids, and the routed files that move rows between them.

The end of the dedup job (pair de-duplication, connected components, groups) runs as
rounds of parallel tasks, each holding one *partition*: the ids in
[p * partition_ids, (p + 1) * partition_ids). A task that produces rows for other
partitions writes ONE routed file: a parquet file with one row group per destination
partition, the destinations listed in the file's metadata. A task reading its inbound
rows opens every routed file of the previous step and reads only its own row group, so
memory holds one partition's rows, and a step writes as many files as it has tasks (not
tasks x partitions).
"""

from __future__ import annotations

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


def write_routed(url: str, table: pa.Table, dest: np.ndarray) -> dict[int, int]:
    """Write `table`'s rows grouped by destination partition `dest` (one int per row) as
    one routed file (atomically); returns rows per destination."""
    dest = np.asarray(dest, np.int64)
    order = np.argsort(dest, kind="stable")
    table, dest = table.take(pa.array(order)), dest[order]
    dests, starts, counts = np.unique(dest, return_index=True, return_counts=True)
    schema = table.schema.with_metadata({DESTS_KEY: json.dumps(dests.tolist()).encode()})
    with storage.atomic_open(url) as f, pq.ParquetWriter(f, schema, compression="zstd") as writer:
        for start, count in zip(starts.tolist(), counts.tolist(), strict=True):
            writer.write_table(table.slice(start, count).replace_schema_metadata(schema.metadata),
                               row_group_size=count)
    return dict(zip(dests.tolist(), counts.tolist(), strict=True))


def read_inbound(urls: Sequence[str], partition: int, schema: pa.Schema) -> pa.Table:
    """The rows routed to `partition` by every file in `urls` (missing row groups: none)."""
    parts = []
    for url in urls:
        fs, path = storage.filesystem(url)
        with fs.open(path, "rb") as f:
            pf = pq.ParquetFile(f)
            dests = json.loads(pf.schema_arrow.metadata[DESTS_KEY])
            if partition in dests:
                parts.append(pf.read_row_group(dests.index(partition)).replace_schema_metadata(None))
    if not parts:
        return schema.empty_table()
    return pa.concat_tables([p.cast(schema) for p in parts])
