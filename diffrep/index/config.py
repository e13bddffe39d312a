"""The index job's typed config and its validation (run before any training)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from autofaiss.utils.cast import cast_memory_to_bytes

from diffrep.config import ConfigError, RunSettings, helps
from diffrep.models import check_model_name


@dataclass
class IndexConfig(RunSettings):
    RENAMED: ClassVar[dict[str, str]] = {"cpus_per_task": "cpus_per_worker"}

    model: str = field(default="sscd_onnx", metadata=helps("whose embeddings to index"))
    max_index_memory_usage: str = field(default="16GB", metadata=helps(
        "budget for the whole index (all shards together), e.g. 100MB, 16GB"))
    current_memory_available: str = field(default="4GB", metadata=helps(
        "RAM one build process may use (training, adding a slice, merging a shard)"))
    num_shards: int = field(default=1, metadata=helps(
        "index shards K; each is memory-mapped by one search actor"))
    index_key: str = field(default="auto", metadata=helps(
        "auto (autofaiss chooses under the budget) or a faiss factory string, e.g. IVF1024,PQ64x8"))
    exact_below: int = field(default=20000, metadata=helps(
        "corpora with fewer vectors get an exact index (IVF1,Flat)"))
    opq: Literal["auto", "keep", "drop"] = field(default="auto", metadata=helps(
        "OPQ rotation in autofaiss's key: auto drops it when PQ sub-vectors have <= 4 dims "
        "(it barely helps there and dominates training time), keep, or drop"))
    train_points_per_centroid: int = field(default=64, metadata=helps(
        "training sample size per IVF centroid (faiss wants 39..256)"))
    two_level_lists: int = field(default=65536, metadata=helps(
        "IVFs with more lists train their coarse centroids in two levels over the sample "
        "partitioned by cell (diffrep.index.two_level: no task holds the whole sample, "
        "k-means costs ~sqrt(nlist) per vector instead of nlist, lists ~15% less balanced); "
        "0: always one k-means in one task"))
    rows_per_slice: int = field(default=1_000_000, metadata=helps(
        "vectors per add task (a slice of whole embedding files)"))
    key_partition_rows: int = field(default=1_000_000, metadata=helps(
        "keys per part of the key index (key -> id), hash-partitioned: resolving K keys "
        "reads at most K parts; a part's task holds its keys (~230 MB per 1M)"))
    eval_queries: int = field(default=1000, metadata=helps(
        "held-out corpus vectors (not in the training sample) used to measure recall"))
    target_recall_at_10: float = field(default=0.95, metadata=helps(
        "nprobe is the smallest that reaches this recall@10 against exact search"))
    max_nprobe: int = field(default=256, metadata=helps("largest nprobe tried"))
    coarse_recall: float = field(default=0.99, metadata=helps(
        "share of a vector's 8 nearest centroids the HNSW coarse quantizer must return; the "
        "build sets its efSearch to the smallest that does (diffrep.index.coarse)"))
    seed: int = field(default=0, metadata=helps("training sample and eval query seed"))
    add: bool = field(default=True, metadata=helps(
        "when an index exists: add embedding shards it does not hold, without retraining"))
    cpus_per_worker: int = field(default=2, metadata=helps(
        "CPUs per training/add/merge task (faiss threads); lowered (WARNING) to the largest "
        "node's CPUs"))


def memory_bytes(text: str, key: str) -> int:
    try:
        value = int(cast_memory_to_bytes(text))
    except Exception as exc:
        raise ConfigError(f"index.{key}: {text!r} is not a memory size like 100MB or 16GB") from exc
    if value <= 0:
        raise ConfigError(f"index.{key} must be positive")
    return value


def validate(cfg: IndexConfig) -> None:
    """Check the config's own values (the corpus is checked when it is listed)."""
    errors = []
    try:
        check_model_name(cfg.model)
    except ValueError as exc:
        errors.append(f"index.model: {exc}")
    for key in ("max_index_memory_usage", "current_memory_available"):
        try:
            memory_bytes(getattr(cfg, key), key)
        except ConfigError as exc:
            errors.append(str(exc))
    for key in ("num_shards", "rows_per_slice", "eval_queries", "key_partition_rows", "max_nprobe", "cpus_per_worker",
                "max_attempts", "train_points_per_centroid"):
        if getattr(cfg, key) < 1:
            errors.append(f"index.{key} must be >= 1")
    if not 0 < cfg.coarse_recall <= 1:
        errors.append(f"index.coarse_recall: {cfg.coarse_recall} is not in (0, 1]")
    if not 0 < cfg.target_recall_at_10 <= 1:
        errors.append("index.target_recall_at_10 must be in (0, 1]")
    if errors:
        raise ConfigError("invalid index config:\n  - " + "\n  - ".join(errors))
