"""The index's recall sweep: recall@1 and recall@10 of each nprobe candidate against the
exact top-10 (computed by the add tasks), and the nprobe it chooses.

Memory: the eval queries and their top-10 (eval_queries x 10), and one shard per task.
"""

from __future__ import annotations

import io
import logging

import numpy as np

from diffrep import storage
from diffrep.index import build as work
from diffrep.index.choose import nlist_of
from diffrep.index.config import IndexConfig
from diffrep.index.layout import IndexLayout
from diffrep.index.plan import SliceSpec
from diffrep.index.vectors import merge_topk

log = logging.getLogger("diffrep")

EVAL_K = 10


def nprobe_candidates(key: str, max_nprobe: int) -> list[int]:
    nlist = nlist_of(key)
    out, p = [], 1
    while p < min(nlist, max_nprobe):
        out.append(p)
        p *= 2
    return out + [min(nlist, max_nprobe)]


SWEEP_ROUND = 3  # nprobe candidates per round of shard tasks (the sweep stops at the target)


def evaluate(cfg: IndexConfig, layout: IndexLayout, plan: dict, shards: list[dict],
             slices: list[SliceSpec], queries: np.ndarray, executor) -> dict:
    """recall@1 / recall@10 against exact search for each nprobe; picks the smallest nprobe
    reaching the target (else the best). Exact top-10 comes from the add tasks. Candidates
    run in rounds of SWEEP_ROUND, ascending, and the sweep stops after the round that
    reaches the target: at 1M x 64-d (IVF1024 Flat) the larger nprobes up to 256 were
    most of the sweep's time."""
    nprobes = nprobe_candidates(plan["key"], cfg.max_nprobe)
    if not len(queries):
        return {"nprobe": nprobes[-1], "sweep": []}
    truth_parts = []
    for s in slices:
        with np.load(io.BytesIO(storage.read_bytes(layout.path(layout.eval_name(s.slice_id)))),
                     allow_pickle=False) as z:
            truth_parts.append((z["sims"], z["ids"]))
    _, truth = merge_topk(truth_parts, EVAL_K)
    sweep: list[dict] = []
    for first in range(0, len(nprobes), SWEEP_ROUND):
        batch = nprobes[first:first + SWEEP_ROUND]
        per_shard = executor.map(work.sweep_shard, [(layout.path(s["file"]),) for s in shards],
                                 shared={"key": plan["key"], "queries": queries, "k": EVAL_K,
                                         "nprobes": batch, "threads": cfg.cpus_per_worker})
        for i, nprobe in enumerate(batch):
            _, found = merge_topk([(r[i][1], r[i][2]) for r in per_shard], EVAL_K)
            sweep.append({"nprobe": nprobe, **recall(found, truth),
                          "ms_per_query": 1000 * max(r[i][3] for r in per_shard) / len(queries)})
        if any(s["recall_at_10"] >= cfg.target_recall_at_10 for s in sweep):
            break  # the smallest nprobe reaching the target is measured: larger ones only cost
    exact = plan["key"].endswith(",Flat") and nprobes[-1] >= nlist_of(plan["key"])
    return {**choose_nprobe(sweep, cfg.target_recall_at_10, cfg.max_nprobe, exact), "sweep": sweep}


def choose_nprobe(sweep: list[dict], target: float, max_nprobe: int, exact: bool = False) -> dict:
    """The smallest nprobe reaching `target` recall@10. When none does (the codes, not the
    probing, limit recall), the smallest within 1% of the best: past that knee, probing
    more lists costs time for almost no recall. `exact`: the sweep's last nprobe searches
    every list of uncompressed codes, so what recall it misses comes from ties."""
    good = [s for s in sweep if s["recall_at_10"] >= target]
    if good:
        return good[0]
    best = max(s["recall_at_10"] for s in sweep)
    chosen = next(s for s in sweep if s["recall_at_10"] >= best - 0.01)
    if exact:
        log.info("index: exact search measures recall@10 %.3f against itself: the rest are "
                 "ties between equally similar vectors (duplicates), not misses", best)
        return sweep[-1]
    log.warning("index: no nprobe <= %d reaches recall@10 %.2f (best %.3f): nprobe=%d, recall@10 "
                "%.3f; use exact re-rank or a larger budget for more", max_nprobe, target, best,
                chosen["nprobe"], chosen["recall_at_10"])
    return chosen


def recall(found: np.ndarray, truth: np.ndarray) -> dict:
    """recall@1: the exact nearest is ranked first; recall@10: share of the exact top-10
    found in the top-10 (both averaged over queries)."""
    at1 = float(np.mean(found[:, 0] == truth[:, 0]))
    at10 = float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]))
    return {"recall_at_1": at1, "recall_at_10": at10}
