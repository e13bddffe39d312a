"""The key index: corpus key -> global id, hash-partitioned, each part sorted by key.

Built with the index: every add task routes its slice's (key, id) rows to `key_parts`
partitions by a stable hash of the key (keys/runs/slice_S.parquet, routed files of
diffrep.routing), then one task per partition merges them, with the previous
generation's part when the index grows, into keys/part_PPPPP[.gG].parquet (a task holds
one partition). Resolving K keys reads only the parts those keys hash to, never the id
maps. The manifest lists the parts and their sha256 like every other file.
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from diffrep import storage
from diffrep.index.layout import IndexLayout
from diffrep.routing import RoutedWriter, read_inbound

KEY_SCHEMA = pa.schema([("key", pa.string()), ("id", pa.int64())])
log = logging.getLogger("diffrep")


def key_partition(keys: list[str], parts: int) -> np.ndarray:
    """Partition of each key: blake2b (stable across processes and runs) mod parts."""
    return np.array([int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "little")
                     % parts for k in keys], np.int64)


def run_name(slice_id: int) -> str:
    return f"keys/runs/slice_{slice_id:05d}.parquet"


def part_name(part: int, generation: int) -> str:
    return f"keys/part_{part:05d}.parquet" if generation == 0 else f"keys/part_{part:05d}.g{generation}.parquet"


def key_run_writer(layout: IndexLayout, slice_id: int) -> RoutedWriter:
    """The writer of one slice's key run; feed it with `write_keys`, batch by batch."""
    return RoutedWriter(layout.path(run_name(slice_id)), KEY_SCHEMA)


def write_keys(writer: RoutedWriter, keys: pa.Array | pa.ChunkedArray, ids: np.ndarray, parts: int) -> None:
    """Route one batch of (key, id) rows to their key partitions. The batch's keys are
    hashed as Python strings: pass a file's rows, not a slice's, to bound that copy."""
    writer.write(pa.table({"key": keys, "id": ids}, schema=KEY_SCHEMA), key_partition(keys.to_pylist(), parts))


def build_key_part(layout: IndexLayout, part: int, slice_ids: list[int], previous: str | None,
                   generation: int) -> dict:
    """Merge the runs of `slice_ids` (and the previous generation's part) into one sorted
    part; returns {part, file, keys}."""
    tables = [read_inbound([layout.path(run_name(s)) for s in slice_ids], part, KEY_SCHEMA)]
    if previous:
        tables.append(storage.read_table(layout.path(previous)).cast(KEY_SCHEMA))
    table = pa.concat_tables(tables).sort_by([("key", "ascending"), ("id", "ascending")])
    name = part_name(part, generation)
    storage.write_parquet(layout.path(name), table)
    return {"part": part, "file": name, "keys": len(table)}


def resolve(layout: IndexLayout, files: list[str], keys: list[str]) -> dict[str, int]:
    """Global ids of `keys` (absent keys are left out; a key held twice gives its smallest
    id), reading only the parts the keys hash to."""
    if not keys:
        return {}
    which = key_partition(keys, len(files))
    out: dict[str, int] = {}
    for part in np.unique(which).tolist():
        wanted = pa.array([k for k, w in zip(keys, which.tolist(), strict=True) if w == part], pa.string())
        table = storage.read_table(layout.path(files[part]), filters=[("key", "in", wanted.to_pylist())])
        table = table.filter(pc.is_in(table["key"], value_set=wanted))  # sorted: first is smallest id
        for key, id_ in zip(table["key"].to_pylist(), table["id"].to_pylist(), strict=True):
            out.setdefault(key, id_)
    return out
