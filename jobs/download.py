"""Download a LAION-style parquet (url, caption) into WebDataset shards with img2dataset,
named as jobs.embed reads them. Incremental: a rerun downloads only unfinished shards.

Run: python -m jobs.download --config configs/laion-aesthetics-12m.yaml [--key value ...]
"""

from __future__ import annotations

import sys

from diffrep.config import ConfigError, load_job_config
from diffrep.data.download import DownloadConfig, run_download, validate
from diffrep.logs import setup_logging


def main(argv: list[str] | None = None) -> int:
    log = setup_logging()
    try:
        cfg = load_job_config(DownloadConfig, "download", argv, description=__doc__)
        validate(cfg)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    totals = run_download(cfg)
    log.info("download: %d shard(s) in %s: %d of %d images downloaded; failures by reason: %s",
             totals["shards"], cfg.output_folder, totals["successes"], totals["count"],
             {k: v for k, v in totals["status_dict"].items() if k != "success"} or "none")
    return 0


if __name__ == "__main__":
    sys.exit(main())
