"""Memorization scan: generate images from diffusion checkpoints (or take already generated
ones), embed them with the index's descriptor, search their training matches, and compare
each checkpoint's top-1 similarities with the training set's own baseline. Resumable per
(checkpoint, prompt batch). Needs jobs.embed and jobs.build_index.

Writes <root>/scans/<run>/{prompts.parquet, generations/, images/, summary.json, report.html}.
Run: python -m jobs.scan --config configs/demo.yaml [--key value ...]
"""

from __future__ import annotations

import sys

from ray.exceptions import RayError

from diffrep.config import ConfigError, load_job_config
from diffrep.diffusion.pipelines import CheckpointError, resolve_checkpoint
from diffrep.distributor import UnitsFailed
from diffrep.index.manifest import IndexIntegrityError
from diffrep.logs import setup_logging
from diffrep.ray_utils import init_ray
from diffrep.resources import Ask, fit_config
from diffrep.scan.config import ScanConfig, validate
from diffrep.scan.run import run_scan
from diffrep.search import RayShards, open_index, wants_shard_actors


def main(argv: list[str] | None = None) -> int:
    log = setup_logging()
    try:
        cfg = load_job_config(ScanConfig, "scan", argv, description=__doc__)
        validate(cfg)
        checkpoints = [resolve_checkpoint(c) for c in cfg.checkpoints]
        labels = [c.label for c in checkpoints]
        if len(set(labels)) < len(labels):
            raise ConfigError(f"scan.checkpoints: two checkpoints share an output name "
                              f"({', '.join(labels)}); give them distinct folder names")
        handle = open_index(cfg.root, cfg.model, verify_files="metadata")
    except (ConfigError, CheckpointError, IndexIntegrityError) as exc:
        log.error("%s", exc)
        return 2
    init_ray(cfg.ray_address)
    use_actors = wants_shard_actors(cfg.shard_actors, handle)
    shards = None
    try:  # shard actors and generation workers are held together: they must fit the cluster
        cfg = fit_config(cfg, "scan", [
            Ask("shard actors", len(handle.shard_files()) if use_actors else 0,
                cfg.shard_actor_cpus, cpus_key="scan.shard_actor_cpus", cpus_fit="share"),
            Ask("generation workers", cfg.workers, cfg.cpus_per_worker, cfg.gpus_per_worker,
                "scan.cpus_per_worker", "scan.gpus_per_worker", "scan.workers", count_fit=True)])
        if use_actors:  # each shard actor verifies its shard's sha256
            shards = RayShards(handle, num_cpus=cfg.shard_actor_cpus)
        else:
            handle.verify_shards()
        run_scan(cfg, checkpoints, handle, shards.actors if shards else None)
    except (ConfigError, IndexIntegrityError) as exc:
        log.error("%s", exc)
        return 2
    except (RayError, UnitsFailed) as exc:
        log.error("scan: %s", exc)
        return 1
    finally:
        if shards:
            shards.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
