"""Deduplicate a training set: every image's neighbours above the duplicate threshold
through the sharded index (exact re-rank), duplicate counts, groups, caption multiplicity,
and an HTML report. Resumable per query slice. Needs jobs.embed and jobs.build_index.

Writes <root>/dedup/<model>/{pairs,groups,group_stats}.parquet, summary.json, report.html.
Run: python -m jobs.dedup --config configs/demo.yaml [--key value ...]
"""

from __future__ import annotations

import sys

from ray.exceptions import RayError

from diffrep.config import ConfigError, load_job_config
from diffrep.dedup.config import DedupConfig, validate
from diffrep.dedup.run import run_dedup
from diffrep.executor import RayExecutor
from diffrep.index.manifest import IndexIntegrityError
from diffrep.logs import setup_logging
from diffrep.ray_utils import init_ray
from diffrep.resources import Ask, fit_config
from diffrep.search import RayShards, open_index, wants_shard_actors


def main(argv: list[str] | None = None) -> int:
    log = setup_logging()
    try:
        cfg = load_job_config(DedupConfig, "dedup", argv, description=__doc__)
        validate(cfg)
        handle = open_index(cfg.root, cfg.model, verify_files="metadata")
    except (ConfigError, IndexIntegrityError) as exc:
        log.error("%s", exc)
        return 2
    init_ray(cfg.ray_address)
    use_actors = wants_shard_actors(cfg.shard_actors, handle)
    try:  # the shard actors and one slice task (1 CPU) beside them must fit the cluster
        cfg = fit_config(cfg, "dedup", [
            Ask("shard actors", len(handle.shard_files()) if use_actors else 0,
                cfg.shard_actor_cpus, cpus_key="dedup.shard_actor_cpus", cpus_fit="share"),
            Ask("slice tasks", 1, 1.0)])
        # shard actors verify their shard's sha256; in-process searchers are verified here
        actors = RayShards(handle, num_cpus=cfg.shard_actor_cpus,
                           threads=cfg.shard_actor_threads).actors if use_actors else None
        if not use_actors:
            handle.verify_shards()
    except (ConfigError, IndexIntegrityError) as exc:
        log.error("%s", exc)
        return 2
    except RayError as exc:  # a shard actor's verification error, wrapped by Ray
        log.error("dedup: %s", exc)
        return 2
    executor = RayExecutor(num_cpus=1, max_attempts=cfg.max_attempts,
                           progress_interval_s=cfg.progress_interval_s,
                           stall_warning_s=cfg.stall_warning_s)
    try:
        run_dedup(cfg, handle, executor, actors)
    except ConfigError as exc:  # resumed with other settings
        log.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
