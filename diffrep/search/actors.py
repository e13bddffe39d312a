"""Shard actors for the jobs that search the index (search, dedup, scan): how many they
ask of the cluster, and starting them (each verifies its own shards) or, without them,
verifying the shards in the driver."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from typing import TypeVar

from diffrep.resources import Ask, Cluster, read_cluster
from diffrep.search.index import IndexHandle
from diffrep.search.ray_shards import RayShards, actor_count

log = logging.getLogger("diffrep")
C = TypeVar("C")


def shards_per_actor_for(requested: int, num_shards: int, cluster: Cluster) -> int:
    """Index shards per shard actor: `requested` when >= 1; 0 ("auto"): the fewest per
    actor that leave no more actors than the cluster has whole CPUs, ceil(shards / CPUs),
    so that each actor can have a CPU of its own (one shard per actor where there is a CPU
    per shard; 5 per actor for 10 shards on 2 CPUs)."""
    if requested >= 1:
        return requested
    return max(1, math.ceil(num_shards / max(1, int(cluster.cpus))))


def resolve_shards_per_actor(cfg: C, section: str, handle: IndexHandle, use_actors: bool,
                             cluster: Cluster | None = None) -> C:
    """`cfg` with `shards_per_actor` decided (shards_per_actor_for against the connected
    cluster, read now unless given); an auto choice is logged with its reason."""
    requested = cfg.shards_per_actor
    if requested >= 1 or not use_actors:
        return dataclasses.replace(cfg, shards_per_actor=max(1, requested))
    cluster = cluster or read_cluster()
    shards = len(handle.shard_files())
    chosen = shards_per_actor_for(requested, shards, cluster)
    log.info("%s.shards_per_actor auto: %d (%d index shards, %d actors for %g CPUs)", section, chosen,
             shards, actor_count(shards, chosen), cluster.cpus)
    return dataclasses.replace(cfg, shards_per_actor=chosen)


def shard_actor_threads_for(requested: int, actors: int, cluster: Cluster) -> int:
    """faiss threads per shard actor: `requested` when >= 1; 0 ("auto"): the cluster's
    whole CPUs over the actors, at most the largest node's, at least 1. An index with
    fewer shards than the cluster has CPUs (one shard at 1M) then still searches on every
    core: the callers' tasks mostly wait on their actors' answers."""
    if requested >= 1:
        return requested
    largest = max((int(n.cpus) for n in cluster.nodes), default=1)
    return max(1, min(largest, int(cluster.cpus) // max(1, actors)))


def resolve_shard_actor_threads(cfg: C, section: str, handle: IndexHandle, use_actors: bool,
                                cluster: Cluster | None = None) -> C:
    """`cfg` with `shard_actor_threads` decided (shard_actor_threads_for its actors, after
    resolve_shards_per_actor); an auto choice is logged with its reason."""
    if cfg.shard_actor_threads >= 1 or not use_actors:
        return dataclasses.replace(cfg, shard_actor_threads=max(1, cfg.shard_actor_threads))
    cluster = cluster or read_cluster()
    actors = actor_count(len(handle.shard_files()), cfg.shards_per_actor)
    chosen = shard_actor_threads_for(0, actors, cluster)
    log.info("%s.shard_actor_threads auto: %d (%d shard actor(s) for %g CPUs)", section, chosen,
             actors, cluster.cpus)
    return dataclasses.replace(cfg, shard_actor_threads=chosen)


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
