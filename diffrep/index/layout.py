"""Where the index job writes, under <root>/indexes/<model>/:

  plan.json                 the build in progress: slices (embedding files, id range),
                            index key, eval query positions
  trained.index             the trained empty index, shipped to every add task
  parts/slice_IIIII.index   one slice's vectors added to the trained index (removed once
                            merged and committed)
  parts/slice_IIIII.sizes.npy  entries per IVF list of the slice (the list partition's input)
  parts/slice_IIIII.json    the slice's completion marker, written last
  ids/slice_IIIII.parquet   id map: id, key, url, caption, shard (embedding file), row
  eval/slice_IIIII.npz      exact top-k of the eval queries within the slice
  shard_SS.index            memory-mappable shard holding every entry of its run of IVF
                            lists (diffrep.index.lists); shard_SS.gG.index after the
                            G-th incremental add rewrote it
  index_infos.json          factory string, parameters, nprobe, measured recall, sizes
  manifest.json             written LAST, the commit: every file's sha256 and size, the
                            slices, and each shard's lists
"""

from __future__ import annotations

from dataclasses import dataclass

from diffrep import storage
from diffrep.models import model_dir_name


@dataclass(frozen=True)
class IndexLayout:
    root: str
    model: str

    @property
    def base(self) -> str:
        return storage.join(self.root, "indexes", model_dir_name(self.model))

    def path(self, name: str) -> str:
        return storage.join(self.base, name)

    @property
    def plan(self) -> str:
        return self.path("plan.json")

    @property
    def trained(self) -> str:
        return self.path("trained.index")

    @property
    def infos(self) -> str:
        return self.path("index_infos.json")

    @property
    def manifest(self) -> str:
        return self.path("manifest.json")

    def part(self, slice_id: int) -> str:
        return self.path(f"parts/slice_{slice_id:05d}.index")

    def part_sizes(self, slice_id: int) -> str:
        return self.path(f"parts/slice_{slice_id:05d}.sizes.npy")

    def part_done(self, slice_id: int) -> str:
        return self.path(f"parts/slice_{slice_id:05d}.json")

    @staticmethod
    def idmap_name(slice_id: int) -> str:
        return f"ids/slice_{slice_id:05d}.parquet"

    def idmap(self, slice_id: int) -> str:
        """The slice's id map (id, key, url, caption, shard, row in id order)."""
        return self.path(self.idmap_name(slice_id))

    @staticmethod
    def probes_name(slice_id: int) -> str:
        """The slice's vectors' probed lists, in id order (diffrep.index.probes)."""
        return f"probes/slice_{slice_id:05d}.npy"

    @staticmethod
    def eval_name(slice_id: int) -> str:
        return f"eval/slice_{slice_id:05d}.npz"

    @staticmethod
    def shard_name(shard: int, generation: int) -> str:
        return f"shard_{shard:02d}.index" if generation == 0 else f"shard_{shard:02d}.g{generation}.index"
