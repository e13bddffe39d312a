"""Where the dedup job writes, under <root>/dedup/<model>/:

  pairs/slice_IIIII.parquet    key_a, key_b, similarity, id_a, id_b: the pairs whose
                               smaller id is one of the slice's queries (each pair once;
                               read the folder as one parquet dataset)
  slices/slice_IIIII.counts.parquet  id, duplicate_count of the slice's queries (count > 0)
  slices/slice_IIIII.npz       the slice's component forest (node, root)
  slices/slice_IIIII.json      completion marker, written last
  merge/rR_JJJJJ.npz           component forests merged in round R
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
        return self.path(f"pairs/slice_{slice_id:05d}.parquet")

    def slice_counts(self, slice_id: int) -> str:
        return self.path(f"slices/slice_{slice_id:05d}.counts.parquet")

    def slice_forest(self, slice_id: int) -> str:
        return self.path(f"slices/slice_{slice_id:05d}.npz")

    def slice_done(self, slice_id: int) -> str:
        return self.path(f"slices/slice_{slice_id:05d}.json")

    def merged(self, round_: int, part: int) -> str:
        return self.path(f"merge/r{round_}_{part:05d}.npz")
