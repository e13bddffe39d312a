"""Caption ranking (paper 2): deduplicate the training captions, score each with DCS and
the text-conditional noise magnitude (one UNet evaluation), rank them, and label the top
with ECS, full generations and verbatim ground truth (MV / RV / TV / none) against the
training set. Resumable per caption shard and per ground-truth chunk. Needs jobs.embed
and jobs.build_index (and jobs.dedup for duplication order and templates, optional).

Writes <root>/rankings/<run>/{captions/, scores/, ranked.parquet, truth/, summary.json, report.html}.
Run: python -m jobs.dcs --config configs/demo.yaml [--key value ...]
"""

from __future__ import annotations

import sys

from ray.exceptions import RayError

from diffrep.config import ConfigError, load_job_config
from diffrep.diffusion.pipelines import CheckpointError, resolve_checkpoint
from diffrep.distributor import UnitsFailed
from diffrep.index.manifest import IndexIntegrityError
from diffrep.logs import setup_logging
from diffrep.rank.config import RankConfig, validate
from diffrep.rank.run import run_rank
from diffrep.ray_utils import init_ray
from diffrep.resources import Ask, fit_config
from diffrep.search import open_index


def main(argv: list[str] | None = None) -> int:
    log = setup_logging()
    try:
        cfg = load_job_config(RankConfig, "dcs", argv, description=__doc__)
        validate(cfg)
        checkpoint = resolve_checkpoint(cfg.checkpoint)
        open_index(cfg.root, cfg.model, verify_files=True)  # the ground truth searches it
    except (ConfigError, CheckpointError, IndexIntegrityError) as exc:
        log.error("%s", exc)
        return 2
    init_ray(cfg.ray_address)
    try:
        cfg = fit_config(cfg, "dcs", [Ask(
            "scoring actors", cfg.workers, cfg.cpus_per_worker, cfg.gpus_per_worker,
            "dcs.cpus_per_worker", "dcs.gpus_per_worker", "dcs.workers", count_fit=True)])
        run_rank(cfg, checkpoint)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    except (RayError, UnitsFailed) as exc:
        log.error("dcs: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
