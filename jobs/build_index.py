"""Build (or extend) the sharded index of one model's embeddings with autofaiss + Ray.

Reads <root>/embeddings/<model>/, writes <root>/indexes/<model>/ (shards, id map,
index_infos.json, manifest.json last). Resumable; new embedding shards are added without
retraining. Run: python -m jobs.build_index --config configs/demo.yaml [--key value ...]
"""

from __future__ import annotations

import sys

from diffrep.config import ConfigError, load_job_config
from diffrep.executor import RayExecutor
from diffrep.index.builder import build, corpus_files
from diffrep.index.config import IndexConfig, validate
from diffrep.logs import setup_logging
from diffrep.ray_utils import init_ray
from diffrep.resources import Ask, fit_config


def main(argv: list[str] | None = None) -> int:
    log = setup_logging()
    try:
        cfg = load_job_config(IndexConfig, "index", argv, description=__doc__)
        validate(cfg)
        corpus_files(cfg)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    init_ray(cfg.ray_address)
    try:
        cfg = fit_config(cfg, "index", [Ask("index tasks", 1, cfg.cpus_per_task,
                                            cpus_key="index.cpus_per_task", cpus_fit="whole")])
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    executor = RayExecutor(num_cpus=cfg.cpus_per_task, max_attempts=cfg.max_attempts,
                           progress_interval_s=cfg.progress_interval_s,
                           stall_warning_s=cfg.stall_warning_s)
    try:
        infos = build(cfg, executor)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    log.info("index: %s: %d vectors, %s, %d shard(s), %.1f MB, recall@10=%s at nprobe=%s",
             cfg.model, infos["ntotal"], infos["index_key"], infos["num_shards"],
             infos["size_bytes"] / 1e6, infos["recall_at_10"], infos["nprobe"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
