"""Copy-detector benchmark (paper 1, sec. 4, Table 1): synthetic copy sets from real
photos (written as WebDataset), mAP / micro-AP / recall@1 per descriptor, and a table in
the shape of Table 1 as markdown, JSON and HTML. Runs in one process (no Ray needed).
Run: diffrep copybench --config configs/demo.yaml [--key value ...]
"""

from __future__ import annotations

from diffrep.copybench.run import CopyBenchConfig, markdown_table, run_copybench, validate
from diffrep.runner import Job, JobContext


def run(cfg: CopyBenchConfig, ctx: JobContext) -> str:
    validate(cfg)
    results = run_copybench(cfg)
    print(markdown_table(results))
    return f"results in {cfg.out_dir}"


JOB = Job("copybench", CopyBenchConfig, run, __doc__)
main = JOB.main
