"""Search over a sharded index: verified loading, fan-out top-k, exact re-rank, range search."""

from diffrep.search.index import IndexHandle, open_index
from diffrep.search.ray_shards import RayShards
from diffrep.search.searcher import Hits, RangeHits, Searcher
from diffrep.search.shards import LocalShards, wants_shard_actors

__all__ = ["Hits", "IndexHandle", "LocalShards", "RangeHits", "RayShards", "Searcher", "open_index",
           "wants_shard_actors"]
