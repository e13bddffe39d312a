"""The scan job's typed config."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from diffrep.config import ConfigError, RunSettings, helps, run_name_problem
from diffrep.diffusion.pipelines import SCHEDULERS
from diffrep.search.config import RegionSettings


@dataclass
class ScanConfig(RegionSettings, RunSettings):
    RENAMED: ClassVar[dict[str, str]] = {"dtype": "pipeline_dtype"}

    run: str = field(default="scan", metadata=helps("run name: outputs under <root>/scans/<run>/"))
    model: str = field(default="sscd_onnx", metadata=helps(
        "descriptor whose index is searched; generations are embedded with it"))
    weights: str | None = field(default=None, metadata=helps(
        "descriptor weights; null: the index's (random when the index was built on random init)"))
    checkpoints: list[str] = field(default_factory=list, metadata=helps(
        "diffusers pipeline directories or hub ids in the local HF cache (safetensors only)"))
    generated: str | None = field(default=None, metadata=helps(
        "instead of checkpoints: a folder of generated images (<name>.png + <name>.txt prompt "
        "[+ <name>.json]) or WebDataset tars (brace pattern), e.g. from a closed model"))
    generated_name: str = field(default="generated", metadata=helps(
        "name under which `generated` images appear in outputs and report"))
    prompts: str = field(default="training", metadata=helps(
        "'training': captions sampled from the index's id map (seeded); or a .txt (one per "
        "line) or .parquet (column prompt or caption) file. Deduplicated after normalising. "
        "A parquet's optional `key` column names each prompt's source training image (its "
        "corpus key): its generations then also get their similarity to that image"))
    num_prompts: int = field(default=100, metadata=helps("prompts used (after deduplication)"))
    prompt_seed: int = field(default=0, metadata=helps("seed of the training-caption sample"))
    seeds_per_prompt: int = field(default=1, metadata=helps(
        "generations per prompt, with seeds seed, seed+1, ..."))
    seed: int = field(default=0, metadata=helps("first generation seed"))
    scheduler: str | None = field(default=None, metadata=helps(
        f"sampler: {', '.join(SCHEDULERS)}; null: the checkpoint's own"))
    steps: int = field(default=50, metadata=helps("denoising steps"))
    guidance_scale: float = field(default=7.5, metadata=helps("classifier-free guidance scale"))
    resolution: int | None = field(default=None, metadata=helps(
        "generated image side, pixels; null: each checkpoint's own (UNet sample_size x VAE "
        "scale factor: 512 for SD v1, 32 for the testbed); a value that differs is logged "
        "beside it"))
    batch_size: int = field(default=8, metadata=helps("images per pipeline call"))
    prompts_per_unit: int = field(default=64, metadata=helps(
        "prompts per work unit (the resume granularity: one parquet + tar per unit)"))
    device: str = field(default="auto", metadata=helps("auto (CUDA when visible), cpu, cuda"))
    pipeline_dtype: str = field(default="auto", metadata=helps(
        "diffusion pipeline precision: auto (float16 on CUDA, float32 on CPU), float16, "
        "bfloat16, float32"))
    workers: int = field(default=1, metadata=helps(
        "generation actors per checkpoint; fewer (WARNING) when they do not fit the cluster "
        "beside the shard actors"))
    gpus_per_worker: float = field(default=0.0, metadata=helps(
        "GPUs per generation actor (1 on a GPU cluster; 0 on CPU: a cluster without GPUs "
        "stops the job before any work)"))
    cpus_per_worker: float = field(default=1.0, metadata=helps("CPUs per generation actor"))
    k: int = field(default=5, metadata=helps("training matches kept per generation"))
    candidates: int = field(default=50, metadata=helps(
        "approximate candidates re-ranked by exact similarity to the stored embeddings"))
    nprobe: int | None = field(default=None, metadata=helps("IVF lists probed; null: the index's"))
    threshold: float = field(default=0.5, metadata=helps(
        "replication threshold on top-1 similarity (SSCD 0.5, paper 1)"))
    region_min_side: int = field(default=128, metadata=helps(
        "regions are switched off (logged, recorded in summary.json) for a scan whose "
        "generations are smaller than this side, pixels: crops of a 32 px image carry no "
        "information and score every image as a copy"))
    region_threshold: float | None = field(default=None, metadata=helps(
        "the region score's replication threshold, and its floor with region_calibrate; "
        "null: the floor calibrated on photos for the region descriptors, 0.5 with crops, "
        "0.65 pooled (diffrep.search.regions.REGION_FLOORS; docs/benchmarks.md, 'Region "
        "matching')"))
    region_calibrate: bool = field(default=True, metadata=helps(
        "raise the region threshold above this index's own nulls: max(region_threshold, "
        "highest null + region_null_margin), the nulls being the region baseline without "
        "each image's duplicates and region_unrelated drawings that copy nothing "
        "(diffrep.search.calibration; on icons and diagrams the fixed 0.5 flags unrelated "
        "images). summary.json and the report say which threshold decided and why"))
    region_null_margin: float = field(default=0.05, metadata=helps(
        "with region_calibrate: how far above the highest null the threshold goes"))
    region_unrelated: int = field(default=32, metadata=helps(
        "with region_calibrate: unrelated images (flat drawings and drawn scenes, seeded by "
        "baseline_seed) region-scored against the index as a second null; cached per index"))
    region_verify: bool = field(default=False, metadata=helps(
        "geometric verification (diffrep.search.geometry: local features matched with "
        "RANSAC) of each generation's best region match scoring above region_threshold - "
        "region_verify_margin: its inliers are recorded, and a region match counts as a copy "
        "only when verified (about 0.1 s per verified pair on one core)"))
    region_verify_margin: float = field(default=0.1, metadata=helps(
        "with region_verify: region scores this far below region_threshold are verified too "
        "(their inliers are recorded; they stay below the threshold unless rescued)"))
    region_rescue_band: float = field(default=0.3, metadata=helps(
        "a region match scoring at most this far below the (calibrated) region threshold "
        "counts as a copy when geometric verification confirms it, provided that none of "
        "this index's own nulls in that band verifies (at least 10 tested; otherwise the "
        "rescue is off, and summary.json and the report say why: diffrep.search.region_rule). "
        "0: off. Mixed and small copies score under the threshold; on 42 photos none of 388 "
        "null queries in the band verified (mirrors tried), while the band took segmix copies "
        "found from 0.21 to 0.47 and pasted photo parts of 10-20% of the image from 0.35 to "
        "0.81 (docs/benchmarks.md, 'Mirrored verification')"))
    region_baseline_shards: int = field(default=4, metadata=helps(
        "the region baseline samples its baseline_size images from this many random "
        "training shards (it reads their images)"))
    baseline_size: int = field(default=1000, metadata=helps(
        "training images in the baseline (top-1 similarity to the rest of the training set)"))
    baseline_seed: int = field(default=0, metadata=helps("seed of the baseline sample"))
    uninformative_baseline_share: float = field(default=0.5, metadata=helps(
        "when more than this share of the baseline (training image against the rest) is "
        "above its threshold, summary.json and the report lead with a warning and mark "
        "each checkpoint's comparison with the baseline uninformative"))
    shard_actors: Literal["auto", "always", "never"] = field(default="auto", metadata=helps(
        "one Ray actor per index shard: auto when the index has more than one shard"))
    shard_actor_cpus: float = field(default=1.0, metadata=helps(
        "CPUs reserved per shard actor, fractions allowed; lowered (WARNING) to a share that "
        "leaves room for the generation workers"))
    shards_per_actor: int = field(default=0, metadata=helps(
        "index shards per shard actor (consecutive shards, one call per actor per batch); "
        "0: auto, ceil(shards / the cluster's CPUs), so that where the cluster has fewer "
        "CPUs than the index has shards, fewer actors get whole CPUs instead of many "
        "sharing them"))
    report_pairs: int = field(default=12, metadata=helps(
        "highest-similarity generation/match pairs shown per checkpoint in the report"))


def validate(cfg: ScanConfig) -> None:
    """Check values before any work; raises ConfigError listing every problem."""
    errors = []
    if problem := run_name_problem("scan", cfg.run):
        errors.append(problem)
    if bool(cfg.checkpoints) == bool(cfg.generated):
        errors.append("give scan.checkpoints (a list) or scan.generated (images), exactly one")
    if cfg.scheduler is not None and cfg.scheduler not in SCHEDULERS:
        errors.append(f"scan.scheduler {cfg.scheduler!r} unknown; known: {', '.join(SCHEDULERS)}")
    if cfg.prompts != "training" and not cfg.prompts.endswith((".txt", ".parquet")):
        errors.append(f"scan.prompts must be 'training', a .txt or a .parquet file, not {cfg.prompts!r}")
    for key in ("num_prompts", "seeds_per_prompt", "steps", "batch_size", "prompts_per_unit",
                "workers", "k", "baseline_size", "report_pairs", "max_attempts"):
        if getattr(cfg, key) < 1:
            errors.append(f"scan.{key} must be >= 1")
    if cfg.shards_per_actor < 0:
        errors.append("scan.shards_per_actor must be >= 0 (0: auto)")
    if cfg.resolution is not None and (cfg.resolution < 8 or cfg.resolution % 8):
        errors.append("scan.resolution must be a multiple of 8 (the VAE's downsampling) or "
                      "null (each checkpoint's own)")
    if not 0 <= cfg.region_null_margin <= 1:
        errors.append("scan.region_null_margin must be in [0, 1]")
    if cfg.region_unrelated < 0:
        errors.append("scan.region_unrelated must be >= 0")
    if not 0 <= cfg.region_verify_margin <= 1:
        errors.append("scan.region_verify_margin must be in [0, 1]")
    if not 0 <= cfg.region_rescue_band <= 1:
        errors.append("scan.region_rescue_band must be in [0, 1] (0: off)")
    if not -1 <= cfg.threshold <= 1 or not -1 <= (cfg.region_threshold or 0) <= 1:
        errors.append("scan.threshold and scan.region_threshold must be in [-1, 1] (cosine similarity)")
    if not 0 <= cfg.uninformative_baseline_share <= 1:
        errors.append("scan.uninformative_baseline_share must be in [0, 1]")
    if cfg.regions:
        errors += cfg.region_errors("scan")
    if cfg.region_min_side < 0:
        errors.append("scan.region_min_side must be >= 0")
    if cfg.region_baseline_shards < 1:
        errors.append("scan.region_baseline_shards must be >= 1")
    if cfg.gpus_per_worker < 0 or cfg.cpus_per_worker < 0:
        errors.append("scan.gpus_per_worker and scan.cpus_per_worker must be >= 0")
    if errors:
        raise ConfigError("invalid scan config:\n  - " + "\n  - ".join(errors))
