"""Build the embedded default: the corpus (real photos + planted near-duplicates), a
folder of "generated" images with planted copies of training images, and tiny
random-weight diffusion pipelines for the scan and ranking jobs.

Run: diffrep build_demo --config configs/demo.yaml
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from diffrep import storage
from diffrep.data.demo import build_demo_corpus
from diffrep.diffusion.tiny import build_tiny_pipeline
from diffrep.runner import Job, JobContext
from diffrep.scan.demo import build_planted_generations


@dataclass
class BuildDemoConfig:
    out_dir: str = field(default="data/demo/corpus", metadata={"help": "where the corpus goes"})
    num_shards: int = field(default=4, metadata={"help": "number of WebDataset shards"})
    duplicates_per_source: float = field(default=1.0, metadata={
        "help": "planted near-duplicates per source photo, on average"})
    seed: int = field(default=0, metadata={"help": "seed of transforms, captions and order"})
    use_opencv_doc: bool = field(default=True, metadata={
        "help": "also use Debian opencv-doc's photos when installed"})
    bad_samples: bool = field(default=True, metadata={
        "help": "add samples the embed job must skip and count (truncated JPEG, no image)"})
    planted_copies: int = field(default=12, metadata={
        "help": "edited copies of training images in <out_dir>/generated (scan ground truth)"})
    pasted_copies: int = field(default=6, metadata={
        "help": "pasted-object copies (part of a training photo in a drawn scene) in <out_dir>/generated"})
    novel_images: int = field(default=8, metadata={
        "help": "drawn images unlike any training image in <out_dir>/generated"})
    tiny_pipelines: int = field(default=2, metadata={
        "help": "random-weight Stable Diffusion pipelines in <out_dir>/pipelines/tiny-<seed>"})
    pipeline_resolution: int = field(default=64, metadata={"help": "their image side, pixels"})
    overwrite: bool = field(default=False, metadata={"help": "rebuild even if the corpus exists"})


def run(cfg: BuildDemoConfig, ctx: JobContext) -> str | None:
    log = ctx.log
    manifest_url = storage.join(cfg.out_dir, "manifest.json")
    if storage.exists(manifest_url) and not cfg.overwrite:
        manifest = storage.read_json(manifest_url)
        log.info("build_demo: corpus exists at %s (%d samples); --overwrite true rebuilds",
                 cfg.out_dir, manifest["num_good_samples"])
    else:
        manifest = build_demo_corpus(cfg.out_dir, cfg.num_shards, cfg.duplicates_per_source,
                                     cfg.seed, cfg.use_opencv_doc, cfg.bad_samples)
        log.info("build_demo: %d source photos, %d planted near-duplicates, %d samples in %d "
                 "shards under %s", manifest["num_sources"], manifest["num_planted_duplicates"],
                 manifest["num_good_samples"], manifest["num_shards"], cfg.out_dir)
    generated = Path(cfg.out_dir) / "generated"
    truth_url = generated / "truth.parquet"
    stale = truth_url.exists() and "box" not in pq.read_schema(truth_url).names  # before pasted copies
    if cfg.overwrite or stale or not truth_url.exists():
        truth = build_planted_generations(cfg.out_dir, str(generated), cfg.planted_copies,
                                          cfg.novel_images, cfg.seed, cfg.pasted_copies)
        log.info("build_demo: %d planted copies (%d of them pasted objects) + %d novel images in %s",
                 sum(truth["planted"].to_pylist()), cfg.pasted_copies, cfg.novel_images, generated)
    for seed in range(cfg.tiny_pipelines):
        path = Path(cfg.out_dir) / "pipelines" / f"tiny-{seed}"
        if cfg.overwrite or not (path / "model_index.json").exists():
            build_tiny_pipeline(path, seed=seed, resolution=cfg.pipeline_resolution)
            log.info("build_demo: random-weight pipeline %s", path)
    return f"corpus, planted generations and pipelines under {cfg.out_dir}"


JOB = Job("build_demo", BuildDemoConfig, run, __doc__)
main = JOB.main
