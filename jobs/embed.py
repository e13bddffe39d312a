"""Embed WebDataset shards with copy-detection descriptors (SSCD, CLIP, DINO) on Ray.

Writes <root>/embeddings/<model>/{img_emb,metadata,stats}/<shard>.{npy,parquet,json};
a shard's stats file is written last and marks it complete, so a resubmitted job skips
finished shards. Run: python -m jobs.embed --config configs/demo.yaml [--key value ...]
"""

from __future__ import annotations

import sys

import ray

from diffrep.config import ConfigError, load_job_config
from diffrep.distributor import run_units
from diffrep.embed.config import EmbedConfig, validate
from diffrep.embed.plan import actor_layout, clean_partial_outputs, model_specs, plan_units
from diffrep.embed.worker import ShardEmbedder
from diffrep.logs import setup_logging
from diffrep.progress import Progress
from diffrep.ray_utils import init_ray
from diffrep.resources import read_cluster


def main(argv: list[str] | None = None) -> int:
    log = setup_logging()
    try:
        cfg = load_job_config(EmbedConfig, "embed", argv, description=__doc__)
        urls = validate(cfg)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    units = plan_units(cfg, urls)
    log.info("embed: %d input shards, %d models %s; %d shards to do, %d already complete",
             len(urls), len(cfg.models), cfg.models, len(units), len(urls) - len(units))
    if not units:
        log.info("embed: nothing to do (use --overwrite true to recompute)")
        return 0
    removed = clean_partial_outputs(cfg)
    if removed:
        log.info("embed: removed %d partial files left by an interrupted run", removed)

    init_ray(cfg.ray_address)
    try:
        layout = actor_layout(cfg, read_cluster())
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    specs = model_specs(cfg, layout)
    log.info("embed: %d %s actor(s), %d CPU(s) each", layout.actors, layout.device, layout.num_cpus)
    actor_cls = ray.remote(ShardEmbedder).options(
        num_cpus=layout.num_cpus, num_gpus=layout.num_gpus, max_restarts=3, max_task_retries=0)
    actors = [actor_cls.remote(specs, cfg.root, device=layout.device, batch_size=cfg.batch_size,
                               decode_threads=cfg.decode_threads or layout.num_cpus,
                               max_pixels=cfg.max_pixels, dtype=cfg.dtype,
                               save_tokens=cfg.save_tokens, torch_threads=layout.num_cpus)
              for _ in range(layout.actors)]
    for name, info in ray.get(actors[0].describe.remote()).items():
        if info["random_init"]:
            log.warning("embed: %s uses RANDOM weights (asked for): its embeddings mean nothing "
                        "for copy detection", name)

    progress = Progress("embed", len(units))
    failures = run_units(
        actors, units,
        submit=lambda actor, u: actor.process.remote(u.url, u.shard, list(u.models)),
        on_result=lambda u, r: progress.update(r.embedded, r.skipped),
        progress=progress, max_attempts=cfg.max_shard_attempts,
        progress_interval_s=cfg.progress_interval_s, stall_warning_s=cfg.stall_warning_s,
    )
    log.info("%s", progress.line())
    if failures:
        for f in failures:
            log.error("embed: shard %s failed: %s", f.unit, f.error)
        log.error("embed: %d shard(s) failed; rerun the job to retry them", len(failures))
        return 1
    log.info("embed: done; outputs under %s/embeddings/", cfg.root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
