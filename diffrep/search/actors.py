"""Shard actors for the jobs that search the index (search, dedup, scan): how many they
ask of the cluster, and starting them (each verifies its own shards) or, without them,
verifying the shards in the driver."""

from __future__ import annotations

from collections.abc import Callable

from diffrep.resources import Ask
from diffrep.search.index import IndexHandle
from diffrep.search.ray_shards import RayShards, actor_count


def shard_actor_ask(section: str, handle: IndexHandle, use_actors: bool, cpus: float,
                    shards_per_actor: int = 1) -> Ask:
    """What the shard actors hold (none without them): one actor per `shards_per_actor`
    shards, fitted by `<section>.shard_actor_cpus`."""
    count = actor_count(len(handle.shard_files()), shards_per_actor) if use_actors else 0
    return Ask("shard actors", count, cpus, cpus_key=f"{section}.shard_actor_cpus", cpus_fit="share")


def start_shard_actors(handle: IndexHandle, use_actors: bool, cpus: float, threads: int,
                       release: Callable, shards_per_actor: int = 1) -> RayShards | None:
    """The shard actors (each verifying its shards' sha256), handed to `release` (the
    job's clean-up); without actors, the driver verifies every shard and None is returned."""
    if use_actors:
        return release(RayShards(handle, num_cpus=cpus, threads=threads, shards_per_actor=shards_per_actor))
    handle.verify_shards()
    return None
