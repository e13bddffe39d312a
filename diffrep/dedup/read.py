"""Reading the dedup job's outputs by partition: a neighbour's group and a group's
members read the one part that holds them, never the whole dataset (at 2B images the
groups hold ~600M rows).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from diffrep import storage
from diffrep.config import ConfigError
from diffrep.dedup.layout import GROUP_PARTITIONING, group_part_of
from diffrep.models import model_dir_name
from diffrep.routing import num_partitions, partition_of


def dedup_base(root: str, model: str) -> str:
    return storage.join(root, "dedup", model_dir_name(model))


def is_complete(base: str) -> bool:
    """The dedup output at `base` is committed (summary.json is written last)."""
    return storage.exists(storage.join(base, "summary.json"))


class DedupGroups:
    """Id -> group and group -> members lookups over a committed dedup output folder."""

    def __init__(self, base: str):
        if not is_complete(base):
            raise FileNotFoundError(f"{base} holds no finished dedup output (summary.json missing): "
                                    f"run jobs.dedup first")
        self.base = base
        plan = storage.read_json(storage.join(base, "plan.json"))
        if plan.get("group_partitioning") != GROUP_PARTITIONING:
            raise ConfigError(f"{base} was written by an earlier diffrep (its groups partitioned by "
                             f"group id range): run jobs.dedup again with dedup.overwrite: true")
        self.partition_ids = int(plan["partition_ids"])
        self.group_parts = num_partitions(int(plan["ntotal"]), self.partition_ids)

    def _parts(self, dataset: str, ids: np.ndarray, part_of: np.ndarray, columns: list[str],
               column: str) -> pa.Table:
        """Rows of `dataset` whose `column` is in `ids`, reading only the parts `part_of`
        (the part of each id) names."""
        tables = []
        for part in np.unique(part_of).tolist():
            url = storage.join(self.base, dataset, f"part_{part:05d}.parquet")
            if not storage.exists(url):
                continue
            tables.append(storage.read_table(url, columns=columns, filters=[(column, "in", ids.tolist())]))
        return pa.concat_tables(tables) if tables else pa.table({c: pa.array([], pa.int64()) for c in columns})

    def group_ids(self, ids: np.ndarray) -> dict[int, int]:
        """{id: group id} of the ids that are in a group of 2+ (others have no duplicate)."""
        ids = np.asarray(ids, np.int64)
        t = self._parts("components", ids, partition_of(ids, self.partition_ids), ["id", "group_id"], "id")
        return dict(zip(t["id"].to_pylist(), t["group_id"].to_pylist(), strict=True))

    def members(self, group_ids: np.ndarray) -> dict[int, list[int]]:
        """{group id: member ids ascending}."""
        group_ids = np.asarray(group_ids, np.int64)
        t = self._parts("groups", group_ids, group_part_of(group_ids, self.group_parts), ["id", "group_id"],
                        "group_id").sort_by(
            [("group_id", "ascending"), ("id", "ascending")])
        out: dict[int, list[int]] = {}
        for i, g in zip(t["id"].to_pylist(), t["group_id"].to_pylist(), strict=True):
            out.setdefault(g, []).append(i)
        return out


def iter_group_sizes(base: str, batch_rows: int = 65536):
    """Record batches (key, caption, group_size) of every grouped image, streamed part by
    part (memory: one batch)."""
    fs, path = storage.filesystem(storage.join(base, "groups"))
    for name in sorted(p for p in fs.ls(path, detail=False) if p.endswith(".parquet")):
        with fs.open(name, "rb") as f:
            yield from pq.ParquetFile(f).iter_batches(batch_size=batch_rows,
                                                      columns=["key", "caption", "group_size"])
