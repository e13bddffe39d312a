"""Copy-detector benchmark (paper 1, sec. 4, Table 1): synthetic copy sets from real
photos (written as WebDataset), mAP / micro-AP / recall@1 per descriptor, and a table in
the shape of Table 1 as markdown, JSON and HTML. Runs in one process (no Ray needed).
Run: python -m jobs.copybench --config configs/demo.yaml [--key value ...]
"""

from __future__ import annotations

import sys

from diffrep.config import ConfigError, load_job_config
from diffrep.copybench.run import CopyBenchConfig, markdown_table, run_copybench, validate
from diffrep.logs import setup_logging


def main(argv: list[str] | None = None) -> int:
    log = setup_logging()
    try:
        cfg = load_job_config(CopyBenchConfig, "copybench", argv, description=__doc__)
        validate(cfg)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    results = run_copybench(cfg)
    print(markdown_table(results))
    log.info("copybench: results in %s", cfg.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
