"""The search job's loop: open (and verify) the index, start one shard actor per shard
when the index has several, search the queries through the routed searcher a window of
batches at a time (window_batches: on a list-partitioned index each shard is called with
full batches of the window's queries that probe its lists; the next window's shard calls
run while this one is re-ranked: search_ahead), write the results as they come (two
windows in memory at a time) and a report of the top queries."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from diffrep import storage
from diffrep.progress import Progress
from diffrep.resources import fit_config
from diffrep.runner import JobContext
from diffrep.search import LocalShards, RayShards, Searcher, open_index, wants_shard_actors
from diffrep.search.actors import resolve_shards_per_actor, shard_actor_ask
from diffrep.search.config import SearchConfig, validate
from diffrep.search.queries import ImageQueries, QueryBatch, image_embedder, load_queries
from diffrep.search.report import TopQueries, report_url, write_search_report
from diffrep.search.results import ResultsWriter, hits_table, results_schema
from diffrep.search.searcher import Hits
from diffrep.search.training_regions import TrainingRegions


def run_search(cfg: SearchConfig, ctx: JobContext) -> str:
    """Search every query; returns the job's result line."""
    log = ctx.log
    validate(cfg)
    handle = open_index(cfg.root, cfg.model, verify_files="metadata" if cfg.verify else False)
    use_actors = wants_shard_actors(cfg.shard_actors, handle)
    if cfg.verify and not use_actors:
        handle.verify_shards()  # shard actors verify their own shard
    embedder = image_embedder(cfg, handle) if cfg.images is not None else None
    queries = load_queries(cfg, handle, embedder)
    if use_actors:
        ctx.ray(cfg.ray_address)
        cfg = resolve_shards_per_actor(cfg, "search", handle, use_actors)
        cfg = fit_config(cfg, "search", [
            shard_actor_ask("search", handle, True, cfg.shard_actor_cpus, cfg.shards_per_actor)])
        backend = ctx.release(RayShards(handle, num_cpus=cfg.shard_actor_cpus, threads=1,
                                              shards_per_actor=cfg.shards_per_actor))
    else:
        backend = LocalShards(handle)
    spec = queries.regions if isinstance(queries, ImageQueries) else None
    searcher = Searcher(handle, backend, nprobe=cfg.nprobe,
                        candidate_regions=TrainingRegions.for_spec(handle, embedder, spec,
                                                                   cfg.region_store))
    ctx.working()
    progress = Progress("search", queries.num_batches(cfg.batch_size), unit="batches", item="queries")
    out = cfg.out or storage.join(cfg.root, "search", handle.layout.base.rsplit("/", 1)[-1],
                                  "results.parquet")
    report = isinstance(queries, ImageQueries) and cfg.report
    top = TopQueries(cfg.report_queries, min(cfg.report_matches, cfg.k))
    with ResultsWriter(out, results_schema(regions=spec is not None), handle, cfg.name_rows) as results:

        def write(window: list[QueryBatch], hits: Hits) -> None:
            start = 0
            for batch in window:
                table = hits_table(batch.keys, hits.rows(start, start + len(batch.keys)))
                start += len(batch.keys)
                results.write(table)
                if report:
                    top.add(table)
                progress.update(len(batch.keys), batch.skipped)
            progress.report(every_s=10)

        if spec is not None:  # region queries: embedded, searched and re-ranked a batch at a time
            for batch in queries.batches(cfg.batch_size):
                write([batch], searcher.search(batch.vectors, cfg.k, candidates=cfg.candidates,
                                               regions=batch.regions))
        else:
            search_ahead(searcher, cfg, windows(queries.batches(cfg.batch_size),
                                                window_batches(cfg, searcher)), write)
    progress.finish()
    log.info("search: routing %s", json.dumps(backend.stats.as_dict()))
    log.info("search: seconds by part %s", json.dumps({**backend.times.as_dict(), **results.times.as_dict()}))
    result = f"{progress.items_done} queries, {results.rows} result rows -> {out}"
    if report:
        flag = cfg.report_threshold
        if spec is not None and flag is not None:  # region scores: at least their floor
            flag = max(flag, spec.floor)
        url = write_search_report(handle, top, report_url(out), spec is not None, flag)
        result += f"; report -> {url}"
    return result


def search_ahead(searcher: Searcher, cfg: SearchConfig, query_windows: Iterator[list[QueryBatch]],
                 write: Callable[[list[QueryBatch], Hits], None]) -> None:
    """Search each window and `write` its hits, in order, in three stages that overlap:
    the coarse assignment of window i+1 (a thread), the shard calls and merge of window i
    (a second thread) and the re-rank and writing of window i-1 (this thread). Otherwise
    the shard actors would wait on the driver's assignment and re-rank, and the driver on
    them. Three windows are in memory at once (window_batches budgets for them)."""

    def find(vectors: np.ndarray, assigned: Future) -> tuple[np.ndarray, np.ndarray]:
        return searcher.candidates(vectors, cfg.k, cfg.rerank, cfg.candidates, batch=cfg.batch_size,
                                   assigned=assigned.result())

    def rank(window: list[QueryBatch], vectors: np.ndarray, found: Future) -> None:
        write(window, searcher.ranked(vectors, found.result(), cfg.k, cfg.rerank, batch=cfg.batch_size))

    with ThreadPoolExecutor(1, thread_name_prefix="assign-ahead") as assigner, \
            ThreadPoolExecutor(1, thread_name_prefix="search-ahead") as ahead:
        previous = None
        for window in query_windows:
            vectors = window[0].vectors if len(window) == 1 else np.concatenate([b.vectors for b in window])
            found = ahead.submit(find, vectors, assigner.submit(searcher.assign, vectors))
            if previous is not None:
                rank(*previous)
            previous = (window, vectors, found)
        if previous is not None:
            rank(*previous)


def window_batches(cfg: SearchConfig, searcher: Searcher) -> int:
    """Query batches searched together (SearchConfig.window_mb): one per shard of a
    list-partitioned index, fewer where three windows' queries and candidates (one being
    assigned, one searched, one re-ranked: search_ahead) would not fit window_mb; 1 for an
    index that fans out."""
    if searcher.backend.router is None or cfg.window_mb == 0:
        return 1
    per_query = 8 * searcher.handle.dim + 16 * max(cfg.k, cfg.candidates) + 72 * searcher.nprobe
    fit = (cfg.window_mb << 20) // (3 * per_query * cfg.batch_size)
    return int(max(1, min(searcher.backend.num_shards(), fit)))


def windows(batches: Iterator[QueryBatch], size: int) -> Iterator[list[QueryBatch]]:
    """`batches` in lists of `size` (the last one shorter)."""
    window: list[QueryBatch] = []
    for batch in batches:
        window.append(batch)
        if len(window) == size:
            yield window
            window = []
    if window:
        yield window
