"""The embed job's loop: plan the shards still to do, start the embedding actors, fan the
shards out to them with retries and progress. Each shard's outputs are written by its
actor, its stats file last (the completion marker), so a rerun skips finished shards."""

from __future__ import annotations

import ray

from diffrep.distributor import run_units
from diffrep.embed.config import EmbedConfig, validate
from diffrep.embed.plan import actor_layout, clean_partial_outputs, model_specs, plan_units
from diffrep.embed.worker import ShardEmbedder
from diffrep.progress import Progress
from diffrep.resources import read_cluster
from diffrep.runner import JobContext, JobFailed


def run_embed(cfg: EmbedConfig, ctx: JobContext) -> str:
    """Embed every input shard not yet complete; returns the job's result line."""
    log = ctx.log
    urls = validate(cfg)
    units = plan_units(cfg, urls)
    log.info("embed: %d input shards, %d models %s; %d shards to do, %d already complete",
             len(urls), len(cfg.models), cfg.models, len(units), len(urls) - len(units))
    if not units:
        return "nothing to do (use --overwrite true to recompute)"
    removed = clean_partial_outputs(cfg)
    if removed:
        log.info("embed: removed %d partial files left by an interrupted run", removed)

    ctx.ray(cfg.ray_address)
    layout = actor_layout(cfg, read_cluster())
    specs = model_specs(cfg, layout)
    log.info("embed: %d %s worker(s), %d CPU(s) each", layout.actors, layout.device,
             layout.num_cpus)
    actor_cls = ray.remote(ShardEmbedder).options(
        num_cpus=layout.num_cpus, num_gpus=layout.num_gpus, max_restarts=3, max_task_retries=0)
    actors = ctx.kill_at_end([
        actor_cls.remote(specs, cfg.root, device=layout.device, batch_size=cfg.batch_size,
                         decode_threads=cfg.decode_threads or layout.num_cpus,
                         max_pixels=cfg.max_pixels, dtype=cfg.storage_dtype,
                         save_tokens=cfg.save_tokens, torch_threads=layout.num_cpus)
        for _ in range(layout.actors)])
    for name, info in ray.get(actors[0].describe.remote()).items():
        if info["random_init"]:
            log.warning("embed: %s uses RANDOM weights (asked for): its embeddings mean nothing "
                        "for copy detection", name)
    ctx.working()

    progress = Progress("embed", len(units))
    failures = run_units(
        actors, units,
        submit=lambda actor, u: actor.process.remote(u.url, u.shard, list(u.models)),
        on_result=lambda u, r: progress.update(r.embedded, r.skipped),
        progress=progress, max_attempts=cfg.max_attempts,
        progress_interval_s=cfg.progress_interval_s, stall_warning_s=cfg.stall_warning_s,
    )
    progress.finish()
    if failures:
        for f in failures:
            log.error("embed: shard %s failed: %s", f.unit, f.error)
        raise JobFailed(f"{len(failures)} shard(s) failed (listed above); rerun the job "
                        f"to retry them")
    return f"{progress.items_done} images embedded; outputs under {cfg.root}/embeddings/"
