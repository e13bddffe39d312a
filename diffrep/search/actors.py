"""Shard actors for the jobs that search the index (search, dedup, scan): how many they
ask of the cluster, and starting them (each verifies its own shard) or, without them,
verifying the shards in the driver."""

from __future__ import annotations

from collections.abc import Callable

from diffrep.resources import Ask
from diffrep.search.index import IndexHandle
from diffrep.search.searcher import RayShards


def shard_actor_ask(section: str, handle: IndexHandle, use_actors: bool, cpus: float) -> Ask:
    """What the shard actors hold (none without them), fitted by `<section>.shard_actor_cpus`."""
    return Ask("shard actors", len(handle.shard_files()) if use_actors else 0, cpus,
               cpus_key=f"{section}.shard_actor_cpus", cpus_fit="share")


def start_shard_actors(handle: IndexHandle, use_actors: bool, cpus: float, threads: int,
                       release: Callable) -> RayShards | None:
    """One actor per shard, each verifying its shard's sha256, handed to `release` (the
    job's clean-up); without actors, the driver verifies every shard and None is returned."""
    if use_actors:
        return release(RayShards(handle, num_cpus=cpus, threads=threads))
    handle.verify_shards()
    return None
