"""The dedup job's steps: self-search per query slice (resumable), component merge
rounds, tables, summary and report."""

from __future__ import annotations

import logging
import time

from diffrep import storage
from diffrep.dedup.assemble import assemble
from diffrep.dedup.components import merge_forest_files
from diffrep.dedup.config import DedupConfig
from diffrep.dedup.layout import DedupLayout
from diffrep.dedup.pairs import dedup_slice
from diffrep.dedup.report import write_report
from diffrep.progress import Progress
from diffrep.search.index import IndexHandle

log = logging.getLogger("diffrep")


def run_dedup(cfg: DedupConfig, handle: IndexHandle, executor, shard_actors: list | None) -> dict:
    """Run every step; returns the summary (also written as summary.json)."""
    layout = DedupLayout(cfg.root, cfg.model)
    if cfg.overwrite:
        storage.remove_tree(layout.base)
    for folder in ("slices", "pairs", "merge", ""):
        storage.remove_stale_temporaries(layout.path(folder) if folder else layout.base)
    slice_ids = [s.slice_id for s in handle.slices]
    todo = [s for s in handle.slices if not storage.exists(layout.slice_done(s.slice_id))]
    log.info("dedup: %d query slice(s), %d to do, threshold %.3f", len(slice_ids), len(todo),
             cfg.threshold)
    t0 = time.monotonic()
    progress = Progress("dedup", len(todo), unit="slices", item="queries")
    shared = {"threshold": cfg.threshold, "margin": cfg.margin, "query_batch": cfg.query_batch,
              "nprobe": cfg.nprobe}
    if shard_actors:
        shared["shard_actors"] = shard_actors
    executor.map(dedup_slice, [(cfg.root, cfg.model, s.slice_id) for s in todo], shared=shared,
                 progress=progress, count=lambda r: r["queries"])
    log.info("%s", progress.line())

    t_search = time.monotonic() - t0
    t0 = time.monotonic()
    files = [layout.slice_forest(s) for s in slice_ids]
    round_ = 0
    while len(files) > 1:
        chunks = [files[i:i + cfg.merge_fan_in] for i in range(0, len(files), cfg.merge_fan_in)]
        outputs = [layout.merged(round_, j) for j in range(len(chunks))]
        executor.map(merge_forest_files, list(zip(chunks, outputs, strict=True)))
        log.info("dedup: merge round %d: %d forests -> %d", round_, len(files), len(outputs))
        files, round_ = outputs, round_ + 1

    t_merge = time.monotonic() - t0
    t0 = time.monotonic()
    summary = assemble(layout, handle, slice_ids, files[0], cfg.threshold)
    summary["seconds"] = {"search": round(t_search, 3), "merge": round(t_merge, 3),
                          "assemble": round(time.monotonic() - t0, 3)}
    storage.write_json(layout.path("summary.json"), summary)
    url = write_report(layout, handle, summary, cfg.report_groups, cfg.report_members)
    log.info("dedup: %d images, %d pairs, %d duplicated images in %d groups (largest %d); "
             "report %s", summary["images"], summary["pairs"], summary["duplicated_images"],
             summary["groups"], summary["largest_group"], url)
    return summary
