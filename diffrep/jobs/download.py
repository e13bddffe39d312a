"""Download a LAION-style parquet (url, caption) into WebDataset shards with img2dataset,
named as the embed job reads them. Incremental: a rerun downloads only unfinished shards.
img2dataset re-encodes every image (resized, as `encode_format`); to keep original bytes
of a local folder, use `diffrep shards` instead.
Run: diffrep download --config configs/laion-aesthetics-12m.yaml [--key value ...]
"""

from __future__ import annotations

from diffrep.data.download import DownloadConfig, run_download, validate
from diffrep.runner import Job, JobContext


def run(cfg: DownloadConfig, ctx: JobContext) -> str:
    validate(cfg)
    totals = run_download(cfg)
    failures = {k: v for k, v in totals["status_dict"].items() if k != "success"}
    return (f"{totals['shards']} shard(s) in {cfg.output_folder}: {totals['successes']} of "
            f"{totals['count']} images downloaded; failures by reason: {failures or 'none'}")


JOB = Job("download", DownloadConfig, run, __doc__)
main = JOB.main
