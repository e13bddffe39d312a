"""Memorization-detector benchmark (diffrep.detect.bench): DCS, noise magnitude (Wen et al.
2024), ECS and an angle-plus-magnitude score (after Asthana & Belagiannis, ICLR 2026) on
captions with known labels, by ROC AUC, TPR at 1% FPR and UNet passes per caption.

Labels: a testbed model's truth (default) or a CSV/parquet with columns caption,label.
Writes <out_dir>/{results.json, table.md, report.html}.
Run: diffrep detectbench [--checkpoint testbed/memorizing] [--labels FILE] [--out_dir DIR]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from diffrep.config import ConfigError, helps
from diffrep.runner import Job, JobContext


@dataclass
class DetectBenchConfig:
    checkpoint: str = field(default="testbed/memorizing", metadata=helps(
        "StableDiffusionPipeline directory (local, safetensors)"))
    labels: str | None = field(default=None, metadata=helps(
        "truth.json / CSV / parquet (caption, label); null: <checkpoint>/testbed/truth.json"))
    out_dir: str = field(default="out/detectbench", metadata=helps("output folder"))
    resolution: int = field(default=32, metadata=helps("image side, pixels"))
    guidance_scale: float = field(default=7.5, metadata=helps("CFG scale of DCS and ECS"))
    seed: int = field(default=0, metadata=helps("noise seed"))
    ecs_seeds: int = field(default=4, metadata=helps("J: one-step samples per caption for ECS"))
    max_captions: int | None = field(default=None, metadata=helps(
        "keep every positive and at most this many captions in all (seeded); null: all"))
    batch_size: int = field(default=64, metadata=helps("captions per UNet call"))
    threads: int = field(default=1, metadata=helps("torch CPU threads"))


def run(cfg: DetectBenchConfig, ctx: JobContext) -> str | None:
    log = ctx.log
    labels_path = Path(cfg.labels or Path(cfg.checkpoint) / "testbed" / "truth.json")
    if not (Path(cfg.checkpoint) / "model_index.json").exists():
        raise ConfigError(f"detectbench.checkpoint {cfg.checkpoint}: no model_index.json")
    if not labels_path.exists():
        raise ConfigError(f"detectbench.labels {labels_path}: not found")
    import torch

    from diffrep.detect.bench import read_kinds, read_labels, run_bench, subsample
    from diffrep.testbed.verify import load_pipeline

    torch.set_num_threads(cfg.threads)
    try:
        captions, labels = read_labels(labels_path)
    except ValueError as exc:
        raise ConfigError(f"detectbench.labels {labels_path}: {exc}") from None
    kind_of = dict(zip(captions, read_kinds(labels_path) or [], strict=False))
    captions, labels = subsample(captions, labels, cfg.max_captions, cfg.seed)
    pipe = load_pipeline(cfg.checkpoint, cfg.threads)
    results = run_bench(pipe, captions, labels, cfg.out_dir, cfg.resolution,
                        f"detectors on {cfg.checkpoint}", cfg.guidance_scale, cfg.seed,
                        cfg.ecs_seeds, batch_size=cfg.batch_size,
                        kinds=[kind_of[c] for c in captions] if kind_of else None)
    for d, r in results.items():
        log.info("%s: AUC %.3f, TPR@1%%FPR %.3f, %d passes/caption", d, r["auc"],
                 r["tpr_at_fpr"], r["passes_per_caption"])
    return f"results in {cfg.out_dir}"


JOB = Job("detectbench", DetectBenchConfig, run, __doc__)
main = JOB.main
