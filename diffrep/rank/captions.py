"""Caption sets for ranking: caption metadata parquet(s) streamed with pyarrow, captions
normalised and deduplicated, each kept with its source images (keys, urls, embedding
shards); optionally the most duplicated first.

Memory: rows are hashed by caption into `num_buckets` bucket files in one streaming pass
(one record batch in memory), then each bucket is deduplicated on its own, so a step
holds one bucket. The dedup job's group sizes are streamed into buckets by the same
caption hash (its groups carry each image's caption from the index's id map), so a
bucket's join needs only that bucket's grouped images. Selecting the `max_captions` most
duplicated needs only a histogram of duplication counts, then holds the selected captions.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from diffrep import storage
from diffrep.config import ConfigError
from diffrep.scan.prompts import normalise

log = logging.getLogger("diffrep")

SOURCE_SCHEMA = pa.schema([("caption", pa.string()), ("key", pa.string()), ("url", pa.string()),
                           ("shard", pa.string())])


def caption_inputs(spec: str) -> list[str]:
    """Parquet files of a folder or glob pattern, sorted."""
    import glob

    paths = sorted(glob.glob(os.path.join(spec, "*.parquet"))) if os.path.isdir(spec) else sorted(glob.glob(spec))
    if not paths:
        raise ConfigError(f"dcs.captions {spec!r} matches no parquet file")
    return paths


def _bucket_of(captions: list[str], num_buckets: int) -> np.ndarray:
    return np.array([int.from_bytes(hashlib.blake2b(c.encode(), digest_size=8).digest(), "little")
                     % num_buckets for c in captions], np.int64)


def bucket_captions(paths: list[str], out_dir: str, num_buckets: int, column: str = "caption",
                    batch_rows: int = 65536) -> Counter:
    """Stream `paths` into bucket files out_dir/bucket_NNNNN.parquet (normalised caption,
    key, url, shard); returns counts (rows read, rows kept, skipped by reason)."""
    counts: Counter = Counter()
    os.makedirs(out_dir, exist_ok=True)
    writers: dict[int, pq.ParquetWriter] = {}
    try:
        for path in paths:
            pf = pq.ParquetFile(path)
            names = pf.schema_arrow.names
            if column not in names:
                raise ConfigError(f"{path}: no column {column!r} (columns: {names})")
            cols = [c for c in (column, "key", "url", "shard") if c in names]
            default_shard = os.path.splitext(os.path.basename(path))[0]
            for batch in pf.iter_batches(batch_size=batch_rows, columns=cols):
                n = batch.num_rows
                counts["rows"] += n
                caps = [normalise(c) for c in batch.column(column).to_pylist()]
                keep = np.array([bool(c) for c in caps])
                counts["empty_caption"] += int((~keep).sum())
                column_or = {name: batch.column(name).to_pylist() if name in cols else [fill] * n
                             for name, fill in (("key", None), ("url", None), ("shard", default_shard))}
                table = pa.table({"caption": caps, **column_or}, schema=SOURCE_SCHEMA)
                table = table.filter(pa.array(keep))
                counts["kept"] += len(table)
                buckets = _bucket_of(table["caption"].to_pylist(), num_buckets)
                for b in np.unique(buckets):
                    part = table.filter(pa.array(buckets == b))
                    if b not in writers:
                        writers[b] = pq.ParquetWriter(os.path.join(out_dir, f"bucket_{b:05d}.parquet"),
                                                      SOURCE_SCHEMA)
                    writers[b].write_table(part)
    finally:
        for w in writers.values():
            w.close()
    return counts


def bucket_group_sizes(dedup_base: str, out_dir: str, num_buckets: int) -> int:
    """Stream the dedup job's groups (key, caption, group_size) into
    out_dir/sizes_NNNNN.parquet (key, group_size) by the caption buckets' hash; returns
    the rows written."""
    from diffrep.dedup.read import iter_group_sizes

    schema = pa.schema([("key", pa.string()), ("group_size", pa.int32())])
    writers: dict[int, pq.ParquetWriter] = {}
    rows = 0
    try:
        for batch in iter_group_sizes(dedup_base):
            caps = [normalise(c) for c in batch.column("caption").to_pylist()]
            buckets = _bucket_of(caps, num_buckets)
            table = pa.table({"key": batch.column("key"), "group_size": batch.column("group_size")},
                             schema=schema)
            for b in np.unique(buckets):
                if b not in writers:
                    writers[b] = pq.ParquetWriter(os.path.join(out_dir, f"sizes_{b:05d}.parquet"), schema)
                writers[b].write_table(table.filter(pa.array(buckets == b)))
            rows += batch.num_rows
    finally:
        for w in writers.values():
            w.close()
    return rows


def dedup_bucket(path: str, group_sizes: pa.Table | None) -> pa.Table:
    """One bucket's distinct captions: images (rows with the caption), keys, urls,
    shards, and duplication = the largest near-duplicate group among its images
    (`group_sizes`: the bucket's key, group_size from the dedup job), else its number of
    images."""
    t = pq.read_table(path)
    if group_sizes is not None and len(t):
        idx = pc.index_in(t["key"], value_set=group_sizes["key"])
        size = pc.fill_null(pc.take(group_sizes["group_size"], idx), 1)
        t = t.append_column("group_size", pc.cast(size, pa.int64()))
    else:
        t = t.append_column("group_size", pa.array(np.ones(len(t), np.int64)))
    g = t.group_by("caption", use_threads=False).aggregate(
        [("key", "list"), ("url", "list"), ("shard", "list"), ([], "count_all"),
         ("group_size", "max")])
    g = g.rename_columns({"key_list": "keys", "url_list": "urls", "shard_list": "shards",
                          "count_all": "images", "group_size_max": "group_size"})
    images = g["images"].to_numpy()
    dup = np.maximum(images, g["group_size"].to_numpy()) if group_sizes is not None else images
    return g.append_column("duplication", pa.array(dup.astype(np.int64)))


def build_caption_shards(paths: list[str], work_dir: str, out_dir: str, num_buckets: int,
                         captions_per_shard: int, column: str = "caption",
                         dedup_base: str | None = None, max_captions: int | None = None,
                         ) -> dict:
    """Write caption shards out_dir/NNNNN.parquet (caption_id, caption, images,
    duplication, keys, urls, shards), most duplicated first when `max_captions` is set;
    duplication counts near-duplicate groups when `dedup_base` (the dedup job's output
    folder) is given; returns stats. caption_id is the caption's position in this order."""
    counts = bucket_captions(paths, work_dir, num_buckets, column)
    if dedup_base:
        counts["grouped_images"] = bucket_group_sizes(dedup_base, work_dir, num_buckets)
    buckets = sorted(f for f in os.listdir(work_dir) if f.startswith("bucket_"))

    def sizes_of(bucket: str) -> pa.Table | None:
        if not dedup_base:
            return None
        path = os.path.join(work_dir, bucket.replace("bucket_", "sizes_"))
        return pq.read_table(path) if os.path.exists(path) else \
            pa.table({"key": pa.array([], pa.string()), "group_size": pa.array([], pa.int32())})
    cutoff = None
    if max_captions:
        hist: Counter = Counter()
        for b in buckets:
            hist.update(dedup_bucket(os.path.join(work_dir, b), sizes_of(b))["duplication"].to_pylist())
        total = 0
        for value in sorted(hist, reverse=True):
            total += hist[value]
            cutoff = value
            if total >= max_captions:
                break
    parts, shard, written = [], 0, 0

    def flush(table: pa.Table) -> None:
        nonlocal shard, written
        for start in range(0, len(table), captions_per_shard):
            chunk = table.slice(start, captions_per_shard)
            ids = pa.array(np.arange(written, written + len(chunk), dtype=np.int64))
            storage.write_parquet(storage.join(out_dir, f"{shard:05d}.parquet"),
                                  chunk.add_column(0, "caption_id", ids))
            shard, written = shard + 1, written + len(chunk)

    columns = ["caption", "images", "duplication", "keys", "urls", "shards"]
    for b in buckets:
        t = dedup_bucket(os.path.join(work_dir, b), sizes_of(b)).select(columns)
        if cutoff is not None:
            parts.append(t.filter(pc.greater_equal(t["duplication"], cutoff)))
        else:
            flush(t.sort_by([("duplication", "descending"), ("caption", "ascending")]))
    if cutoff is not None:
        selected = pa.concat_tables(parts).sort_by([("duplication", "descending"),
                                                    ("caption", "ascending")])
        flush(selected.slice(0, max_captions))
    stats = dict(counts)
    stats.update(captions=written, shards=shard, duplication_cutoff=cutoff)
    return stats
