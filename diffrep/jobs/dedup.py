"""Deduplicate a training set: every image's neighbours above the duplicate threshold
through the sharded index (exact re-rank), duplicate counts, groups, caption multiplicity,
and an HTML report. Resumable per query slice. Needs the embed and build_index jobs.

Writes <root>/dedup/<model>/{pairs,groups,group_stats}.parquet, summary.json, report.html.
Run: diffrep dedup --config configs/demo.yaml [--key value ...]
"""

from __future__ import annotations

from diffrep.dedup.config import DedupConfig, validate
from diffrep.dedup.run import run_dedup
from diffrep.executor import RayExecutor
from diffrep.resources import Ask, fit_config
from diffrep.runner import Job, JobContext
from diffrep.search import open_index, wants_shard_actors
from diffrep.search.actors import (
    resolve_shard_actor_threads,
    resolve_shards_per_actor,
    shard_actor_ask,
    start_shard_actors,
)


def run(cfg: DedupConfig, ctx: JobContext) -> str:
    validate(cfg)
    handle = open_index(cfg.root, cfg.model, verify_files="metadata")
    ctx.ray(cfg.ray_address)
    use_actors = wants_shard_actors(cfg.shard_actors, handle)
    cfg = resolve_shards_per_actor(cfg, "dedup", handle, use_actors)
    cfg = resolve_shard_actor_threads(cfg, "dedup", handle, use_actors)
    # the shard actors and one slice task (1 CPU) beside them must fit the cluster
    cfg = fit_config(cfg, "dedup", [
        shard_actor_ask("dedup", handle, use_actors, cfg.shard_actor_cpus, cfg.shards_per_actor),
        Ask("slice tasks", 1, 1.0)])
    shards = start_shard_actors(handle, use_actors, cfg.shard_actor_cpus,
                                cfg.shard_actor_threads, ctx.release, cfg.shards_per_actor)
    executor = RayExecutor(num_cpus=1, max_attempts=cfg.max_attempts,
                           progress_interval_s=cfg.progress_interval_s,
                           stall_warning_s=cfg.stall_warning_s)
    ctx.working()
    summary = run_dedup(cfg, handle, executor, shards.actors if shards else None,
                        release_actors=shards.close if shards else None)
    return _result_line(summary)


def _result_line(summary: dict | None) -> str:
    if not summary:
        return ""
    keys = ("images", "pairs", "duplicated_images", "groups")
    return ", ".join(f"{k}={summary[k]}" for k in keys if k in summary)


JOB = Job("dedup", DedupConfig, run, __doc__)
main = JOB.main
