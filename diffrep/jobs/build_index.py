"""Build (or extend) the sharded index of one model's embeddings with autofaiss + Ray.

Reads <root>/embeddings/<model>/, writes <root>/indexes/<model>/ (shards, id map,
index_infos.json, manifest.json last). Resumable; new embedding shards are added without
retraining. Its config section is `index`.
Run: diffrep build_index --config configs/demo.yaml [--key value ...]
"""

from __future__ import annotations

from diffrep.executor import RayExecutor
from diffrep.index.builder import build, corpus_files
from diffrep.index.config import IndexConfig, validate
from diffrep.resources import Ask, fit_config
from diffrep.runner import Job, JobContext


def run(cfg: IndexConfig, ctx: JobContext) -> str:
    validate(cfg)
    corpus_files(cfg)
    ctx.ray(cfg.ray_address)
    cfg = fit_config(cfg, "index", [Ask("index tasks", 1, cfg.cpus_per_worker,
                                        cpus_key="index.cpus_per_worker", cpus_fit="whole")])
    executor = RayExecutor(num_cpus=cfg.cpus_per_worker, max_attempts=cfg.max_attempts,
                           progress_interval_s=cfg.progress_interval_s,
                           stall_warning_s=cfg.stall_warning_s)
    ctx.working()
    infos = build(cfg, executor)
    return (f"{cfg.model}: {infos['ntotal']} vectors, {infos['index_key']}, "
            f"{infos['num_shards']} shard(s), {infos['size_bytes'] / 1e6:.1f} MB, "
            f"recall@10={infos['recall_at_10']} at nprobe={infos['nprobe']}")


JOB = Job("build_index", IndexConfig, run, __doc__, section="index")
main = JOB.main
