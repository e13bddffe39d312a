"""Memorization scan: generate images from diffusion checkpoints (or take already generated
ones), embed them with the index's descriptor, search their training matches, and compare
each checkpoint's top-1 similarities with the training set's own baseline. Resumable per
(checkpoint, prompt batch). Needs the embed and build_index jobs.

Writes <root>/scans/<run>/{prompts.parquet, generations/, images/, summary.json, report.html}.
Run: diffrep scan --config configs/demo.yaml [--key value ...]
"""

from __future__ import annotations

from diffrep.config import ConfigError
from diffrep.diffusion.pipelines import resolve_checkpoint
from diffrep.resources import Ask, fit_config
from diffrep.runner import Job, JobContext
from diffrep.scan.config import ScanConfig, validate
from diffrep.scan.run import run_scan
from diffrep.search import open_index, wants_shard_actors
from diffrep.search.actors import resolve_shards_per_actor, shard_actor_ask, start_shard_actors


def run(cfg: ScanConfig, ctx: JobContext) -> str:
    validate(cfg)
    checkpoints = [resolve_checkpoint(c, "scan.checkpoints") for c in cfg.checkpoints]
    labels = [c.label for c in checkpoints]
    if len(set(labels)) < len(labels):
        raise ConfigError(f"scan.checkpoints: two checkpoints share an output name "
                          f"({', '.join(labels)}); give them distinct folder names")
    handle = open_index(cfg.root, cfg.model, verify_files="metadata")
    ctx.ray(cfg.ray_address)
    use_actors = wants_shard_actors(cfg.shard_actors, handle)
    cfg = resolve_shards_per_actor(cfg, "scan", handle, use_actors)
    # shard actors and generation workers are held together: they must fit the cluster
    cfg = fit_config(cfg, "scan", [
        shard_actor_ask("scan", handle, use_actors, cfg.shard_actor_cpus, cfg.shards_per_actor),
        Ask("generation workers", cfg.workers, cfg.cpus_per_worker, cfg.gpus_per_worker,
            "scan.cpus_per_worker", "scan.gpus_per_worker", "scan.workers", count_fit=True)])
    shards = start_shard_actors(handle, use_actors, cfg.shard_actor_cpus, 1, ctx.release,
                                cfg.shards_per_actor)
    ctx.working()
    run_scan(cfg, checkpoints, handle, shards.actors if shards else None)
    return f"summary and report under {cfg.root}/scans/{cfg.run}/"


JOB = Job("scan", ScanConfig, run, __doc__)
main = JOB.main
