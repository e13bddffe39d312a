"""The scan job's typed config."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from diffrep.config import ConfigError, helps, run_name_problem
from diffrep.diffusion.pipelines import SCHEDULERS


@dataclass
class ScanConfig:
    root: str = field(default="out", metadata=helps(
        "output root holding indexes/<model>/; results go to scans/<run>/"))
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
        "line) or .parquet (column prompt or caption) file. Deduplicated after normalising"))
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
    dtype: str = field(default="auto", metadata=helps(
        "pipeline precision: auto (float16 on CUDA, float32 on CPU), float16, bfloat16, float32"))
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
    regions: bool = field(default=True, metadata=helps(
        "object-level matching (paper 1, sec. 3): each generation also gets descriptors of "
        "grid crops at region_scales and a region score, its best region-to-training-image "
        "similarity, with the box; 1 + 13 descriptor calls per generation, small next to "
        "generating it. false: the global descriptor only"))
    region_min_side: int = field(default=128, metadata=helps(
        "regions are switched off (logged, recorded in summary.json) for a scan whose "
        "generations are smaller than this side, pixels: crops of a 32 px image carry no "
        "information and score every image as a copy"))
    region_scales: list[float] = field(default_factory=lambda: [0.5, 0.75], metadata=helps(
        "crop sides as fractions of the image's side; each tiles the image at 50% overlap"))
    region_rerank: int = field(default=3, metadata=helps(
        "top candidates of each generation re-scored region to region, and each region's "
        "own best candidate: their training images are read from the corpus tars and their "
        "grid crops embedded (diffrep.search.training_regions; 14 descriptor calls per "
        "candidate); 0: region to whole training image only"))
    region_threshold: float = field(default=0.5, metadata=helps(
        "replication threshold on the region score, calibrated on the baseline, copybench "
        "and novel images (docs/benchmarks.md, 'Region matching')"))
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
    report_pairs: int = field(default=12, metadata=helps(
        "highest-similarity generation/match pairs shown per checkpoint in the report"))
    overwrite: bool = field(default=False, metadata=helps("discard this run's outputs first"))
    max_attempts: int = field(default=3, metadata=helps("tries per work unit"))
    progress_interval_s: float = field(default=10.0, metadata=helps("seconds between progress lines"))
    stall_warning_s: float = field(default=60.0, metadata=helps(
        "seconds without progress, while units are pending, before the job logs why "
        "(the pending resource demand); it only explains, it stops nothing"))
    ray_address: str | None = field(default=None, metadata=helps(
        "Ray cluster address; null: $RAY_ADDRESS, else start a local Ray"))


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
    if cfg.resolution is not None and (cfg.resolution < 8 or cfg.resolution % 8):
        errors.append("scan.resolution must be a multiple of 8 (the VAE's downsampling) or "
                      "null (each checkpoint's own)")
    if not -1 <= cfg.threshold <= 1 or not -1 <= cfg.region_threshold <= 1:
        errors.append("scan.threshold and scan.region_threshold must be in [-1, 1] (cosine similarity)")
    if not 0 <= cfg.uninformative_baseline_share <= 1:
        errors.append("scan.uninformative_baseline_share must be in [0, 1]")
    if cfg.region_rerank < 0:
        errors.append("scan.region_rerank must be >= 0")
    if cfg.regions and not all(0 < s < 1 for s in cfg.region_scales):
        errors.append("scan.region_scales must be fractions in (0, 1)")
    if cfg.region_min_side < 0:
        errors.append("scan.region_min_side must be >= 0")
    if cfg.region_baseline_shards < 1:
        errors.append("scan.region_baseline_shards must be >= 1")
    if cfg.gpus_per_worker < 0 or cfg.cpus_per_worker < 0:
        errors.append("scan.gpus_per_worker and scan.cpus_per_worker must be >= 0")
    if errors:
        raise ConfigError("invalid scan config:\n  - " + "\n  - ".join(errors))
