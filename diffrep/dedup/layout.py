"""Where the dedup job writes, under <root>/dedup/<model>/.

Outputs (each a folder of parquet parts that pyarrow.dataset, pandas and duckdb read as
one table; part P of pairs and components covers the ids in [P * partition_ids,
(P+1) * partition_ids); groups and group_stats go by a hash of the group id, group_part_of):

  pairs/part_PPPPP.parquet        key_a, key_b, similarity, id_a, id_b: every pair above the
                                  threshold exactly once (id_a < id_b), whichever side's
                                  search found it; part = id_b's partition
  components/part_PPPPP.parquet   id, group_id of every image in a group of 2+, sorted by
                                  id; part = id's partition (id -> group lookups)
  groups/part_PPPPP.parquet       key, id, group_id, group_size, is_representative,
                                  duplicate_count, url, caption: every image in a group of
                                  2+ (images not listed have no duplicate; keep-list = those
                                  + the representatives); part = group_part_of(group_id),
                                  so a group is whole in one part
  group_stats/part_PPPPP.parquet  per group: size, representative, distinct captions,
                                  shared caption share, example urls (largest first within
                                  the part; summary.json lists the largest overall)
  summary.json, report.html

Work files (work/): per query slice its routed edges and marker; per step and partition
its routed output and marker. plan.json records the partitioning a resumed run must keep.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from diffrep import storage
from diffrep.models import model_dir_name
from diffrep.routing import hashed_partition_of

OUTPUT_DATASETS = ("pairs", "components", "groups", "group_stats")
GROUP_PARTITIONING = "hash of group_id"  # plan.json's record of group_part_of


def group_part_of(group_ids: np.ndarray, parts: int) -> np.ndarray:
    """The groups/ and group_stats/ part (of `parts`) that holds each group id. A hash,
    not the id's range: a group's id is its smallest member's, so the large groups' ids
    crowd the first id ranges (at 30M vectors in 60 partitions, range routing gave the
    first groups task 1.46 GB against 0.35 GB at 1M)."""
    return hashed_partition_of(group_ids, parts)


@dataclass(frozen=True)
class DedupLayout:
    root: str
    model: str

    @property
    def base(self) -> str:
        return storage.join(self.root, "dedup", model_dir_name(self.model))

    def path(self, name: str) -> str:
        return storage.join(self.base, name)

    def part(self, dataset: str, partition: int) -> str:
        """One part of an output dataset (pairs, components, groups, group_stats)."""
        return self.path(f"{dataset}/part_{partition:05d}.parquet")

    def slice_edges(self, slice_id: int) -> str:
        return self.path(f"work/search/slice_{slice_id:05d}.parquet")

    def slice_done(self, slice_id: int) -> str:
        return self.path(f"work/search/slice_{slice_id:05d}.json")

    def step_output(self, step: str, partition: int) -> str:
        return self.path(f"work/{step}/part_{partition:05d}.parquet")

    def step_done(self, step: str, partition: int) -> str:
        return self.path(f"work/{step}/part_{partition:05d}.json")
