"""Where the dedup job writes, under <root>/dedup/<model>/:

  slices/slice_IIIII.parquet   canonical pairs (id_a < id_b, similarity) found by the
                               slice's queries
  slices/slice_IIIII.npz       the slice's component forest (node, root)
  slices/slice_IIIII.json      completion marker, written last
  merge/rR_JJJJJ.npz           component forests merged in round R
  pairs.parquet                key_a, key_b, similarity (+ id_a, id_b): every pair once
  groups.parquet               key, id, group_id, group_size, is_representative,
                               duplicate_count, url, caption: every image in a group of 2+
                               (images not listed have no duplicate; keep-list = those +
                               the representatives)
  group_stats.parquet          per group: size, representative, distinct captions, shared
                               caption share, example urls
  summary.json, report.html
"""

from __future__ import annotations

from dataclasses import dataclass

from diffrep import storage
from diffrep.models import model_dir_name


@dataclass(frozen=True)
class DedupLayout:
    root: str
    model: str

    @property
    def base(self) -> str:
        return storage.join(self.root, "dedup", model_dir_name(self.model))

    def path(self, name: str) -> str:
        return storage.join(self.base, name)

    def slice_pairs(self, slice_id: int) -> str:
        return self.path(f"slices/slice_{slice_id:05d}.parquet")

    def slice_forest(self, slice_id: int) -> str:
        return self.path(f"slices/slice_{slice_id:05d}.npz")

    def slice_done(self, slice_id: int) -> str:
        return self.path(f"slices/slice_{slice_id:05d}.json")

    def merged(self, round_: int, part: int) -> str:
        return self.path(f"merge/r{round_}_{part:05d}.npz")
