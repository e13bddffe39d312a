"""Caption ranking (paper 2): deduplicate the training captions, score each with DCS and
the text-conditional noise magnitude (one UNet evaluation), rank them, and label the top
with ECS, full generations and verbatim ground truth (MV / RV / TV / none) against the
training set. Resumable per caption shard and per ground-truth chunk. Needs the embed and
build_index jobs (and dedup for duplication order and templates, optional).

Writes <root>/rankings/<run>/{captions/, scores/, ranked.parquet, truth/, summary.json, report.html}.
Run: diffrep dcs --config configs/demo.yaml [--key value ...]
"""

from __future__ import annotations

from diffrep.diffusion.pipelines import resolve_checkpoint
from diffrep.rank.config import RankConfig, validate
from diffrep.rank.run import run_rank
from diffrep.resources import Ask, fit_config
from diffrep.runner import Job, JobContext
from diffrep.search import open_index


def run(cfg: RankConfig, ctx: JobContext) -> str:
    validate(cfg)
    checkpoint = resolve_checkpoint(cfg.checkpoint, "dcs.checkpoint")
    open_index(cfg.root, cfg.model, verify_files=True)  # the ground truth searches it
    ctx.ray(cfg.ray_address)
    cfg = fit_config(cfg, "dcs", [Ask(
        "scoring actors", cfg.workers, cfg.cpus_per_worker, cfg.gpus_per_worker,
        "dcs.cpus_per_worker", "dcs.gpus_per_worker", "dcs.workers", count_fit=True)])
    ctx.working()
    run_rank(cfg, checkpoint)
    return f"ranking and report under {cfg.root}/rankings/{cfg.run}/"


JOB = Job("dcs", RankConfig, run, __doc__)
main = JOB.main
