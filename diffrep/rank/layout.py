"""Where a ranking run's files live, under <root>/rankings/<run>/:

    plan.json                  settings the run was started with (resume checks them)
    captions/NNNNN.parquet     caption shards: caption_id, caption, images, duplication, keys, urls, shards
    captions/_stats.json       caption-set counts, written last (the step's marker)
    scores/NNNNN.parquet       per caption shard: caption_id, caption, dcs, noise_magnitude, ... (atomic)
    ranked.parquet             every caption by DCS, highest first (k-way merge of sorted shards;
                               ranked_runs/ holds the sorted shards while it runs)
    truth/NNNNN.parquet        top-N chunks: ECS, ground-truth distances and label (atomic)
    truth/NNNNN.tar            those chunks' generations (<caption_id>_<seed>.png)
    summary.json, report.html
"""

from __future__ import annotations

from diffrep import storage


class RankLayout:
    def __init__(self, root: str, run: str):
        self.root = root
        self.base = storage.join(root, "rankings", run)

    def path(self, *parts: str) -> str:
        return storage.join(self.base, *parts)

    def captions(self, shard: int) -> str:
        return self.path("captions", f"{shard:05d}.parquet")

    def scores(self, shard: int) -> str:
        return self.path("scores", f"{shard:05d}.parquet")

    def truth(self, chunk: int, ext: str = "parquet") -> str:
        return self.path("truth", f"{chunk:05d}.{ext}")
