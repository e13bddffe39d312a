"""The search job's typed config."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from diffrep.config import ConfigError, helps
from diffrep.models import pools_regions
from diffrep.search.regions import CROP_SCALES, POOLED_SCALES, RegionSpec


@dataclass(kw_only=True)
class RegionGrid:
    """The region grid of object-level matching, one definition for every job that
    matches regions (search, scan, copybench)."""

    region_scales: list[float] | None = field(default=None, metadata=helps(
        "crop sides as fractions of the image's side; each tiles the image at 50% overlap. "
        "null: by region_descriptors, [0.2, 0.3, 0.4, 0.5, 0.75] pooled (108 regions, no "
        "descriptor call of their own), [0.5, 0.75] cropped (14 regions, a call each)"))
    region_rerank: int = field(default=3, metadata=helps(
        "top candidates per image, and each region's own best candidate, re-scored region "
        "to region: their images are read back and their regions embedded "
        "(diffrep.search.training_regions: one feature map and up to 8 segment crops per "
        "candidate pooled, 14-22 crops cropped); 0: region to whole image only"))
    region_proposals: Literal["grid", "segments"] = field(default="segments", metadata=helps(
        "segments: square crops at region_scales and up to 8 boxes around the image's own "
        "segments (diffrep.search.proposals), for small and irregular objects (pasted "
        "copies found 0.58 against 0.41 with crops; docs/benchmarks.md, 'Region "
        "proposals'); grid: the square crops only"))
    region_descriptors: Literal["auto", "crops", "pooled"] = field(default="auto", metadata=helps(
        "pooled: every grid region pooled from the image's one feature map (R-MAC style, "
        "diffrep.models.pooled; SSCD's ONNX models), the segment boxes cropped (pasted "
        "copies found 0.72 against 0.58 for crops, 1.8x their rate; docs/benchmarks.md, "
        "'Pooled region descriptors'); crops: each region cropped and embedded, one "
        "descriptor call per region; auto: pooled where the model can, else crops"))
    region_pooled_side: int = field(default=480, metadata=helps(
        "with pooled descriptors, images are resized to this side (px) for their feature "
        "map (SSCD: one cell per 32 px; 480: 15 cells a side, finer boxes for small "
        "objects than at 320); 0: the descriptor's own input size"))
    region_segment_side: int = field(default=0, metadata=helps(
        "with pooled descriptors, the side (px) each segment crop is described at; 0: the "
        "descriptor's own input size (320)"))

    def region_errors(self, section: str) -> list[str]:
        """What is wrong with these settings, each naming its key under `section`."""
        errors = []
        if self.region_rerank < 0:
            errors.append(f"{section}.region_rerank must be >= 0")
        if self.region_scales is not None and (
                not self.region_scales or not all(0 < s < 1 for s in self.region_scales)):
            errors.append(f"{section}.region_scales must be null or fractions in (0, 1)")
        if self.region_pooled_side != 0 and self.region_pooled_side < 32:
            errors.append(f"{section}.region_pooled_side must be 0 (the descriptor's own size) or >= 32")
        if self.region_segment_side != 0 and self.region_segment_side < 32:
            errors.append(f"{section}.region_segment_side must be 0 (the descriptor's own size) or >= 32")
        return errors

    def region_spec(self, model: str) -> RegionSpec:
        """The RegionSpec these settings describe for the index of `model` (auto resolved:
        pooled descriptors where the model pools regions, diffrep.models.pools_regions).
        Raises ConfigError for pooled descriptors on a model that cannot pool them."""
        descriptors = self.region_descriptors
        if descriptors == "auto":
            descriptors = "pooled" if pools_regions(model) else "crops"
        elif descriptors == "pooled" and not pools_regions(model):
            raise ConfigError(f"region_descriptors: pooled needs a model whose regions pool from one "
                              f"feature map (sscd_onnx, sscd_distilled_onnx), not {model}: set "
                              "region_descriptors: auto or crops")
        scales = self.region_scales or (POOLED_SCALES if descriptors == "pooled" else CROP_SCALES)
        return RegionSpec(tuple(scales), rerank=self.region_rerank,
                          proposals=self.region_proposals, descriptors=descriptors,
                          pooled_side=self.region_pooled_side if descriptors == "pooled" else 0,
                          segment_side=self.region_segment_side if descriptors == "pooled" else 0)


@dataclass(kw_only=True)
class RegionSettings(RegionGrid):
    """Object-level matching options of the jobs that match images (search, scan); their
    own keys come first in --help."""

    regions: bool = field(default=True, metadata=helps(
        "object-level matching (paper 1, sec. 3; diffrep.search.regions): each image also "
        "gets descriptors of crops (region_proposals) and a region score, the best "
        "similarity of any crop to a training image, with its box and the global similarity; "
        "14-22x the descriptor calls per image. false: the global descriptor only"))
    region_store: bool = field(default=False, metadata=helps(
        "keep the training images' region descriptors that the re-rank computes under "
        "<root>/region_store/, per embedding shard (diffrep.search.region_store), and read "
        "them back in later scans and searches instead of reading and re-embedding those "
        "images: 14.3 KB per stored image with SSCD (float16)"))


@dataclass
class SearchConfig(RegionSettings):
    root: str = field(default="out", metadata=helps("output root holding indexes/<model>/"))
    model: str = field(default="sscd_onnx", metadata=helps("whose index to search"))
    queries: str | None = field(default=None, metadata=helps(
        "query embeddings: an embed-job output root, or an (N, dim) .npy file"))
    queries_metadata: str | None = field(default=None, metadata=helps(
        "with a .npy: parquet with a `key` column, one row per query"))
    query_model: str | None = field(default=None, metadata=helps(
        "with a .npy: the model that embedded it (must be the index's model)"))
    images: str | None = field(default=None, metadata=helps(
        "instead of queries: a folder or glob of images, embedded here with the index's model"))
    weights: Any = field(default=None, metadata=helps(
        "weights for embedding images; null: what the index's embeddings used (random or default)"))
    k: int = field(default=10, metadata=helps("neighbours per query"))
    rerank: Literal["none", "exact"] = field(default="exact", metadata=helps(
        "exact: re-rank candidates by true inner product from the stored embeddings"))
    candidates: int = field(default=100, metadata=helps("approximate candidates re-ranked per query"))
    nprobe: int | None = field(default=None, metadata=helps("IVF lists probed; null: the index's tuned value"))
    batch_size: int = field(default=1024, metadata=helps("queries per shard call"))
    window_mb: int = field(default=256, metadata=helps(
        "driver memory (MB) for a window of query batches searched together on a "
        "list-partitioned index: each shard is called with full batches of the window's "
        "queries that probe its lists, instead of every shard for every batch; the window "
        "is batch_size x shards queries, fewer if three windows (one assigned, one "
        "searched, one re-ranked) would not fit (~8 x dim + 16 x candidates + 72 x nprobe "
        "bytes per query); 0: one batch at a time"))
    name_rows: int = field(default=250_000, metadata=helps(
        "result rows named (key, url, caption) in memory by one id-map lookup at the end "
        "(~270 bytes of driver memory per row, docs/scaling.md); a job with more rows "
        "spills them to disk (~40 bytes per row, beside a local output) and names them "
        "all in one pass over the id map (a DuckDB join, diffrep.search.naming)"))
    shard_actors: Literal["auto", "always", "never"] = field(default="auto", metadata=helps(
        "one Ray actor per index shard: auto when the index has more than one shard"))
    shard_actor_cpus: float = field(default=1.0, metadata=helps(
        "CPUs reserved per shard actor, fractions allowed; lowered (WARNING) to a share of "
        "the cluster's CPUs when the shard actors would not fit"))
    shards_per_actor: int = field(default=0, metadata=helps(
        "index shards per shard actor (consecutive shards, one call per actor per batch); "
        "0: auto, ceil(shards / the cluster's CPUs), so that where the cluster has fewer "
        "CPUs than the index has shards, fewer actors get whole CPUs instead of many "
        "sharing them"))
    out: str | None = field(default=None, metadata=helps(
        "results parquet; null: <root>/search/<model>/results.parquet"))
    report: bool = field(default=True, metadata=helps(
        "with images: an HTML page beside the results (results.html for results.parquet): "
        "each query beside its best matches, the matched box drawn on it"))
    report_queries: int = field(default=50, metadata=helps(
        "queries shown in the report, those with the highest top-1 score"))
    report_matches: int = field(default=5, metadata=helps("matches shown per query in the report"))
    report_threshold: float | None = field(default=0.5, metadata=helps(
        "scores above it are flagged MATCH in the report (0.5: SSCD's replication threshold, "
        "docs/benchmarks.md); region scores at least above their descriptors' floor (0.65 "
        "pooled, diffrep.search.regions.REGION_FLOORS); null: no flags"))
    verify: bool = field(default=True, metadata=helps("check index files against the manifest's sha256"))
    ray_address: str | None = field(default=None, metadata=helps(
        "Ray cluster address; null: $RAY_ADDRESS, else start a local Ray"))


def validate(cfg: SearchConfig) -> None:
    errors = []
    if (cfg.queries is None) == (cfg.images is None):
        errors.append("set exactly one of search.queries (embeddings) and search.images")
    for key in ("k", "candidates", "batch_size", "name_rows", "report_queries", "report_matches"):
        if getattr(cfg, key) < 1:
            errors.append(f"search.{key} must be >= 1")
    if cfg.window_mb < 0:
        errors.append("search.window_mb must be >= 0 (0: one batch at a time)")
    if cfg.shards_per_actor < 0:
        errors.append("search.shards_per_actor must be >= 0 (0: auto)")
    if cfg.regions:
        errors += cfg.region_errors("search")
    if errors:
        raise ConfigError("invalid search config:\n  - " + "\n  - ".join(errors))
