"""The ranking as a k-way merge of score shards, with bounded memory.

Each score shard is sorted on its own (DCS descending, caption_id ascending: one shard in
memory), written as a run, then the runs are merged into ranked.parquet batch by batch:
memory holds about two record batches per shard plus one output batch, never every
score. The top `top_n` rows and the DCS quantiles (exact: order statistics picked at
their positions as the stream passes) come out of the same pass.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from diffrep import storage

ORDER = [("dcs", "descending"), ("caption_id", "ascending")]


def sort_run(score_url: str, run_url: str) -> int:
    """One shard sorted into a run file (atomic); returns its rows."""
    table = storage.read_table(score_url).sort_by(ORDER)
    storage.write_parquet(run_url, table)
    return len(table)


def _rows(url: str, batch_rows: int) -> Iterator[tuple[float, int, pa.RecordBatch, int]]:
    """(-dcs, caption_id, batch, row) of a sorted run, one record batch held at a time."""
    fs, path = storage.filesystem(url)
    with fs.open(path, "rb") as f:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=batch_rows):
            dcs = batch.column("dcs").to_numpy(zero_copy_only=False)
            ids = batch.column("caption_id").to_numpy(zero_copy_only=False)
            for i in range(batch.num_rows):
                yield -float(dcs[i]), int(ids[i]), batch, i


def _take(buffer: list[tuple[pa.RecordBatch, int]], schema: pa.Schema) -> pa.Table:
    """The buffered (batch, row) references as one table, in buffer order."""
    by_batch: dict[int, tuple[pa.RecordBatch, list[int], list[int]]] = {}
    for pos, (batch, row) in enumerate(buffer):
        entry = by_batch.setdefault(id(batch), (batch, [], []))
        entry[1].append(row)
        entry[2].append(pos)
    parts, positions = [], []
    for batch, rows, pos in by_batch.values():
        parts.append(pa.Table.from_batches([batch.take(pa.array(rows, pa.int64()))]).cast(schema))
        positions += pos
    table = pa.concat_tables(parts)
    return table.take(pa.array(np.argsort(np.array(positions, np.int64), kind="stable")))


def quantile_positions(n: int, quantiles: Sequence[float]) -> dict[float, tuple[int, int, float]]:
    """For numpy's default (linear) quantile of n values: the two ascending order
    statistics to interpolate between, and the weight of the upper one."""
    out = {}
    for q in quantiles:
        h = (n - 1) * q
        lo = math.floor(h)
        out[q] = (lo, min(lo + 1, n - 1), h - lo)
    return out


def merge_runs(run_urls: Sequence[str], out_url: str, top_n: int, quantiles: Sequence[float] = (0.5, 0.9, 0.99),
               batch_rows: int = 65536) -> tuple[pa.Table | None, dict[str, float], int]:
    """Merge sorted runs into out_url (atomic) with a `rank` column 1..N; returns (the
    first top_n rows, {quantile: DCS value}, N)."""
    schema = None
    n = 0
    for url in run_urls:
        fs, path = storage.filesystem(url)
        with fs.open(path, "rb") as f:
            meta = pq.ParquetFile(f)
            n += meta.metadata.num_rows
            schema = schema or meta.schema_arrow
    if schema is None:
        return None, {}, 0
    out_schema = pa.schema([pa.field("rank", pa.int64()), *schema])
    wanted = quantile_positions(n, quantiles) if n else {}
    # ascending order statistic i is descending position n - 1 - i
    need = {n - 1 - i for lo, hi, _ in wanted.values() for i in (lo, hi)}
    picked: dict[int, float] = {}
    top_parts: list[pa.Table] = []
    written = 0
    buffer: list[tuple[pa.RecordBatch, int]] = []
    with storage.parquet_writer(out_url, out_schema) as writer:
        def flush() -> None:
            nonlocal written, buffer
            if not buffer:
                return
            table = _take(buffer, schema)
            table = table.add_column(0, "rank", pa.array(np.arange(written + 1, written + len(table) + 1,
                                                                   dtype=np.int64)))
            writer.write_table(table)
            if written < top_n:
                top_parts.append(table.slice(0, top_n - written))
            written += len(table)
            buffer = []

        merged = heapq.merge(*(_rows(u, batch_rows) for u in run_urls), key=lambda r: (r[0], r[1]))
        for pos, (neg_dcs, _, batch, row) in enumerate(merged):
            if pos in need:
                picked[pos] = -neg_dcs
            buffer.append((batch, row))
            if len(buffer) >= batch_rows:
                flush()
        flush()
    values = {}
    for q, (lo, hi, w) in wanted.items():
        a, b = picked[n - 1 - lo], picked[n - 1 - hi]
        values[str(q)] = float(a + w * (b - a))
    top = pa.concat_tables(top_parts) if top_parts else out_schema.empty_table()
    return top, values, n
