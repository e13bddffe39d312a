"""The dedup job's steps: self-search per query slice, then the partitioned end (pairs,
connected components, groups; diffrep.dedup.partition_steps), summary and report.

Every step is a set of tasks with markers, resumed where it stopped. No step holds the
corpus: a search task holds one query slice's hits, every later task one partition of
`partition_ids` ids; the driver holds the per-partition markers only.
Partitions hold at most `partition_ids` ids, fewer when that leaves a worker without one
(partition_span).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable

from diffrep import storage
from diffrep.config import ConfigError
from diffrep.dedup import partition_steps as steps
from diffrep.dedup.assemble import merge_summaries
from diffrep.dedup.config import DedupConfig
from diffrep.dedup.layout import GROUP_PARTITIONING, OUTPUT_DATASETS, DedupLayout
from diffrep.dedup.pairs import dedup_slice
from diffrep.dedup.report import write_report
from diffrep.progress import Progress
from diffrep.routing import num_partitions
from diffrep.search.index import IndexHandle
from diffrep.search.lists import RoutingStats

log = logging.getLogger("diffrep")


def partition_span(ntotal: int, partition_ids: int, workers: int) -> int:
    """Ids per partition of the end stage: at most `partition_ids` (the memory bound), and
    few enough that every worker gets a partition (a 1M index on 2 CPUs: two of 500k)."""
    return max(1, min(partition_ids, math.ceil(ntotal / max(1, workers))))


def _plan(layout: DedupLayout, cfg: DedupConfig, handle: IndexHandle, workers: int) -> int:
    """Record the run's settings; a resumed run must keep those its finished tasks used
    (and keeps its partitioning whatever the cluster's size now). Returns the ids per
    partition."""
    plan = {"threshold": cfg.threshold, "margin": cfg.margin, "nprobe": cfg.nprobe,
            "max_partition_ids": cfg.partition_ids, "index_generation": handle.manifest["generation"],
            "ntotal": handle.ntotal, "group_partitioning": GROUP_PARTITIONING}
    url = layout.path("plan.json")
    if storage.exists(url):
        started = storage.read_json(url)
        started.setdefault("max_partition_ids", started.get("partition_ids"))  # before spans
        changed = sorted(k for k in plan if started.get(k) != plan[k])
        if changed:
            raise ConfigError(f"dedup of {cfg.model} under {cfg.root} was started with other "
                              f"settings or another index ({', '.join(changed)} differ, see {url}): "
                              f"set dedup.overwrite: true to start again")
        return int(started["partition_ids"])
    plan["partition_ids"] = partition_span(handle.ntotal, cfg.partition_ids, workers)
    storage.write_json(url, plan)
    return plan["partition_ids"]


def _run_step(executor, layout: DedupLayout, name: str, fn, args: dict[int, tuple], shared: dict,
              progress_item: str, cfg: DedupConfig) -> list[dict]:
    """Run `fn` for every partition without a marker of step `name`; returns all markers."""
    todo = [p for p in sorted(args) if not storage.exists(layout.step_done(name, p))]
    storage.remove_stale_temporaries(layout.path(f"work/{name}"))
    if todo:
        progress = Progress(f"dedup {name}", len(todo), unit="partitions", item=progress_item)
        executor.map(fn, [args[p] for p in todo], shared=shared, progress=progress,
                     count=lambda r: r.get(progress_item, 0))
        progress.finish()
    return [storage.read_json(layout.step_done(name, p)) for p in sorted(args)]


def run_dedup(cfg: DedupConfig, handle: IndexHandle, executor, shard_actors: list | None,
              release_actors: Callable[[], None] | None = None) -> dict:
    """Run every step; returns the summary (also written as summary.json, last).
    `release_actors` (when given) is called once the search is over: the later steps do not
    search, so the shard actors' CPUs and memory go back to the cluster."""
    layout = DedupLayout(cfg.root, cfg.model)
    if cfg.overwrite:
        storage.remove_tree(layout.base)
    span = _plan(layout, cfg, handle, executor.workers())
    if storage.exists(layout.path("summary.json")):
        log.info("dedup: %s is complete (summary.json); overwrite: true recomputes it", layout.base)
        return storage.read_json(layout.path("summary.json"))
    for folder in (*OUTPUT_DATASETS, "work/search", ""):
        storage.remove_stale_temporaries(layout.path(folder) if folder else layout.base)
    root, model = cfg.root, cfg.model
    slice_ids = [s.slice_id for s in handle.slices]
    todo = [s for s in handle.slices if not storage.exists(layout.slice_done(s.slice_id))]
    parts = num_partitions(handle.ntotal, span)
    log.info("dedup: %d query slice(s), %d to do, threshold %.3f; end stage in %d partition(s) "
             "of %d ids", len(slice_ids), len(todo), cfg.threshold, parts, span)
    seconds: dict[str, float] = {}
    t0 = time.monotonic()
    progress = Progress("dedup search", len(todo), unit="slices", item="queries")
    shared = {"threshold": cfg.threshold, "margin": cfg.margin, "query_batch": cfg.query_batch,
              "nprobe": cfg.nprobe, "partition_ids": span, "progress_interval_s": cfg.progress_interval_s}
    if shard_actors:
        shared["shard_actors"] = shard_actors
    executor.map(dedup_slice, [(root, model, s.slice_id) for s in todo], shared=shared,
                 progress=progress, count=lambda r: r["queries"])
    progress.finish()
    if release_actors:
        release_actors()
    seconds["search"] = time.monotonic() - t0
    routing = RoutingStats()
    for s in handle.slices:
        routing.add(storage.read_json(layout.slice_done(s.slice_id)).get("routing", {}))
    log.info("dedup: search routing %s", json.dumps(routing.as_dict()))

    t0 = time.monotonic()
    every = range(parts)
    adjacency = _run_step(executor, layout, "adjacency", steps.adjacency_step,
                          {p: (root, model, p) for p in every},
                          {"slice_ids": slice_ids, "partition_ids": span}, "nodes", cfg)
    pairs = _run_step(executor, layout, "pairs", steps.pairs_step, {p: (root, model, p) for p in every},
                      {"num_parts": parts}, "pairs", cfg)
    seconds["pairs"] = time.monotonic() - t0

    t0 = time.monotonic()
    # one large-star and one small-star step without a change: a fixed point of both
    changes = [sum(m["changes"] for m in adjacency)]
    step = 0
    while not (len(changes) >= 2 and changes[-1] == 0 and changes[-2] == 0):
        step += 1
        if step > cfg.max_component_steps:
            raise RuntimeError(f"dedup: connected components did not converge in "
                               f"{cfg.max_component_steps} steps (dedup.max_component_steps)")
        markers = _run_step(executor, layout, f"cc{step}", steps.cc_step,
                            {p: (root, model, p, step) for p in every},
                            {"num_parts": parts, "partition_ids": span}, "edges", cfg)
        changes.append(sum(m["changes"] for m in markers))
        log.info("dedup: components step %d (%s-star): %d change(s)", step,
                 "small" if step % 2 else "large", changes[-1])
    _run_step(executor, layout, "labels", steps.labels_step, {p: (root, model, p) for p in every},
              {"last_step": step, "num_parts": parts}, "nodes", cfg)
    seconds["components"] = time.monotonic() - t0

    t0 = time.monotonic()
    group_parts = _run_step(executor, layout, "groups", steps.groups_step,
                            {p: (root, model, p) for p in every},
                            {"num_parts": parts, "report_groups": cfg.report_groups},
                            "duplicated_images", cfg)
    summary = merge_summaries(group_parts, handle.model, cfg.threshold, handle.ntotal,
                              sum(m["pairs"] for m in pairs), cfg.report_groups)
    seconds["groups"] = time.monotonic() - t0
    summary["component_steps"] = step + 1
    summary["routing"] = routing.as_dict()
    summary["seconds"] = {k: round(v, 3) for k, v in seconds.items()}
    url = write_report(layout, handle, summary, cfg.report_members, parts)
    storage.write_json(layout.path("summary.json"), summary)
    if not cfg.keep_work:
        storage.remove_tree(layout.path("work"))
    log.info("dedup: %d images, %d pairs, %d duplicated images in %d groups (largest %d); "
             "report %s", summary["images"], summary["pairs"], summary["duplicated_images"],
             summary["groups"], summary["largest_group"], url)
    return summary
