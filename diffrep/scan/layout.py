"""Where a scan run's files live, under <root>/scans/<run>/:

    prompts.parquet            the run's prompts (prompt_id, prompt, source_key, source_id)
    plan.json                  the settings the run was started with (resume checks them)
    generations/<ckpt>/NNNNN.parquet   one row per generation: provenance + matches
    images/<ckpt>/NNNNN.tar            the generated images (<gen_id>.png + .json)
    done/<ckpt>/NNNNN.json             unit stats, written last: the unit's completion marker
    summary.json, report.html

Baselines are per index, cached at <root>/scans/_baseline/<model>/<index hash>-n<N>-s<seed>.parquet
(region-scored: ...-s<seed>-regions-<scales>.parquet).
"""

from __future__ import annotations

from diffrep import storage
from diffrep.models import model_dir_name


class ScanLayout:
    def __init__(self, root: str, run: str):
        self.root = root
        self.base = storage.join(root, "scans", run)

    def path(self, *parts: str) -> str:
        return storage.join(self.base, *parts)

    def generations(self, label: str, unit: int) -> str:
        return self.path("generations", label, f"{unit:05d}.parquet")

    def images(self, label: str, unit: int) -> str:
        return self.path("images", label, f"{unit:05d}.tar")

    def done(self, label: str, unit: int) -> str:
        return self.path("done", label, f"{unit:05d}.json")

    def baseline(self, model: str, index_hash: str, n: int, seed: int, tag: str = "") -> str:
        """`tag`: what else the baseline depends on (e.g. region scales)."""
        return storage.join(self.root, "scans", "_baseline", model_dir_name(model),
                            f"{index_hash[:16]}-n{n}-s{seed}{tag}.parquet")
