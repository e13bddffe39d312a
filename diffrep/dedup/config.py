"""The dedup job's typed config."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from diffrep.config import ConfigError, RunSettings, helps


@dataclass
class DedupConfig(RunSettings):
    model: str = field(default="sscd_onnx", metadata=helps("whose index to self-search"))
    threshold: float = field(default=0.95, metadata=helps(
        "duplicate when the true similarity is above this (SSCD: 0.95, DESIGN.md)"))
    margin: float = field(default=0.1, metadata=helps(
        "approximate candidates are taken down to threshold - margin, then re-ranked exactly"))
    nprobe: int | None = field(default=None, metadata=helps(
        "IVF lists probed per query; null: the index's tuned value. Near-exact copies share "
        "their list almost always, so a small nprobe often suffices at 0.95"))
    query_batch: int = field(default=1024, metadata=helps("queries per range-search call"))
    partition_ids: int = field(default=10_000_000, metadata=helps(
        "most ids per partition of the job's end (pairs, components, groups): each task "
        "holds one partition's edges, metadata and groups, so this bounds a task's memory; "
        "smaller partitions are used when the cluster has more CPUs than partitions"))
    max_component_steps: int = field(default=64, metadata=helps(
        "star-contraction steps before the components are declared not converging"))
    keep_work: bool = field(default=False, metadata=helps(
        "keep work/ (routed edges, step markers) after the summary is written"))
    shard_actors: Literal["auto", "always", "never"] = field(default="auto", metadata=helps(
        "one Ray actor per index shard: auto when the index has more than one shard"))
    shard_actor_cpus: float = field(default=1.0, metadata=helps("CPUs reserved per shard actor"))
    shards_per_actor: int = field(default=0, metadata=helps(
        "index shards per shard actor (consecutive shards, one call per actor per batch); "
        "0: auto, ceil(shards / the cluster's CPUs), so that where the cluster has fewer "
        "CPUs than the index has shards, fewer actors get whole CPUs instead of many "
        "sharing them"))
    shard_actor_threads: int = field(default=0, metadata=helps(
        "faiss threads per shard actor; 0: auto, the cluster's CPUs over the shard actors "
        "(at most a node's), so that an index with fewer shards than CPUs still searches "
        "on every core (the slice tasks mostly wait while their shard actor searches)"))
    report_groups: int = field(default=12, metadata=helps("largest groups shown in the report"))
    report_members: int = field(default=8, metadata=helps("images shown per group in the report"))


def validate(cfg: DedupConfig) -> None:
    errors = []
    if not -1 <= cfg.threshold <= 1:
        errors.append("dedup.threshold must be in [-1, 1] (cosine similarity)")
    if not 0 <= cfg.margin <= 1:
        errors.append("dedup.margin must be in [0, 1]")
    for key in ("query_batch", "report_groups", "report_members", "max_attempts"):
        if getattr(cfg, key) < 1:
            errors.append(f"dedup.{key} must be >= 1")
    for key in ("shards_per_actor", "shard_actor_threads"):
        if getattr(cfg, key) < 0:
            errors.append(f"dedup.{key} must be >= 0 (0: auto)")
    for key in ("partition_ids", "max_component_steps"):
        if getattr(cfg, key) < 1:
            errors.append(f"dedup.{key} must be >= 1")
    if errors:
        raise ConfigError("invalid dedup config:\n  - " + "\n  - ".join(errors))
