"""The ranking job's typed config (jobs.dcs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from diffrep.config import ConfigError, RunSettings, helps, run_name_problem


@dataclass
class RankConfig(RunSettings):
    RENAMED: ClassVar[dict[str, str]] = {"dtype": "pipeline_dtype"}

    run: str = field(default="dcs", metadata=helps("run name: outputs under <root>/rankings/<run>/"))
    checkpoint: str = field(default="", metadata=helps(
        "diffusers pipeline directory or hub id in the local HF cache (safetensors only)"))
    captions: str | None = field(default=None, metadata=helps(
        "caption parquet folder or glob; null: the embed job's metadata of `model` under root"))
    caption_column: str = field(default="caption", metadata=helps("column holding captions"))
    model: str = field(default="sscd_onnx", metadata=helps(
        "descriptor whose index retrieves neighbours for the ground truth"))
    dedup_groups: str | None = field(default="auto", metadata=helps(
        "the dedup job's output folder (duplication order, template groups); auto: "
        "<root>/dedup/<model>/ when that job has finished; null: none. Template masks come "
        "from a neighbour's dedup group when it has other members, else from its own "
        "nearest neighbours in the index, so no dedup threshold needs picking by hand"))
    max_captions: int | None = field(default=None, metadata=helps(
        "score only the most duplicated captions, this many; null: every caption"))
    num_buckets: int = field(default=16, metadata=helps(
        "hash buckets of the caption deduplication (memory: one bucket at a time)"))
    captions_per_shard: int = field(default=10000, metadata=helps(
        "captions per caption shard (the resume granularity of scoring)"))
    guidance_scale: float = field(default=7.5, metadata=helps("classifier-free guidance scale"))
    seed: int = field(default=0, metadata=helps("seed of the noise x = sigma_1 * eps (one for all captions)"))
    resolution: int | None = field(default=None, metadata=helps(
        "image side, pixels; null: the checkpoint's own (UNet sample_size x VAE scale factor: "
        "512 for SD v1, 32 for the testbed); a value that differs is logged beside it"))
    batch_size: int = field(default=64, metadata=helps("captions per UNet call"))
    device: str = field(default="auto", metadata=helps("auto (CUDA when visible), cpu, cuda"))
    pipeline_dtype: str = field(default="auto", metadata=helps(
        "diffusion pipeline precision: auto (float16 on CUDA, float32 on CPU), float16, "
        "bfloat16, float32"))
    workers: int = field(default=1, metadata=helps(
        "scoring actors (each holds text encoder + UNet); fewer (WARNING) when they do not "
        "fit the cluster"))
    gpus_per_worker: float = field(default=0.0, metadata=helps(
        "GPUs per actor (1 on a GPU cluster; a cluster without GPUs stops the job before any work)"))
    cpus_per_worker: float = field(default=1.0, metadata=helps("CPUs per actor"))
    top_n: int = field(default=100, metadata=helps("top of the DCS ranking given ECS and ground truth"))
    ecs_seeds: int = field(default=4, metadata=helps("J: one-step samples per caption for ECS"))
    edge_threshold: float = field(default=0.5, metadata=helps(
        "Sobel gradient magnitude (grey in [0, 1]) above which a pixel is an edge"))
    gamma: float = field(default=0.75, metadata=helps(
        "ECS: a pixel counts when it is an edge in more than this share of the J samples"))
    gt_seeds: int = field(default=4, metadata=helps("J: full generations per caption for the ground truth"))
    gt_steps: int = field(default=50, metadata=helps("denoising steps of those generations"))
    delta_v: float = field(default=0.12, metadata=helps(
        "matching verbatim: RMS pixel distance (256x256, [0, 1]) to the own training image"))
    delta: float = field(default=0.12, metadata=helps(
        "retrieval / template verbatim: RMS distance to a neighbour (masked for templates)"))
    neighbours: int = field(default=5, metadata=helps("training neighbours retrieved per generation"))
    template_tolerance: float = field(default=0.1, metadata=helps(
        "template mask: pixels whose std across the near-duplicate group exceeds this vary"))
    template_min_fixed_share: float = field(default=0.6, metadata=helps(
        "a neighbour's near-duplicate group is a template only when at least this share of "
        "its pixels is fixed (template_tolerance); on the testbed the template family's "
        "groups fix 0.75 of the pixels, groups of unrelated look-alikes 0.41-0.58"))
    report_top: int = field(default=12, metadata=helps(
        "captions shown with their generations in the report (every labelled caption of "
        "the top_n is listed in its table either way); 0: none"))


def validate(cfg: RankConfig) -> None:
    """Check values before any work; raises ConfigError listing every problem."""
    errors = []
    if problem := run_name_problem("dcs", cfg.run):
        errors.append(problem)
    if not cfg.checkpoint:
        errors.append("dcs.checkpoint is required (a diffusers pipeline directory or hub id)")
    for key in ("num_buckets", "captions_per_shard", "batch_size", "workers", "top_n",
                "ecs_seeds", "gt_seeds", "gt_steps", "neighbours", "max_attempts"):
        if getattr(cfg, key) < 1:
            errors.append(f"dcs.{key} must be >= 1")
    if cfg.report_top < 0:
        errors.append("dcs.report_top must be >= 0")
    if cfg.max_captions is not None and cfg.max_captions < 1:
        errors.append("dcs.max_captions must be >= 1 or null")
    if cfg.resolution is not None and (cfg.resolution < 8 or cfg.resolution % 8):
        errors.append("dcs.resolution must be a multiple of 8 or null (the checkpoint's own)")
    if not 0 <= cfg.template_min_fixed_share <= 1:
        errors.append("dcs.template_min_fixed_share must be in [0, 1]")
    if not 0 <= cfg.gamma < 1:
        errors.append("dcs.gamma must be in [0, 1)")
    if errors:
        raise ConfigError("invalid dcs config:\n  - " + "\n  - ".join(errors))
