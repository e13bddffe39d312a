"""Search an index with query embeddings or images; results as parquet.

One Ray actor per index shard (each verifies and memory-maps its shard), each query batch
sent only to the shards owning the IVF lists it probes, top-k merged, optionally re-ranked exactly from the stored embeddings.
Run: python -m jobs.search --config configs/demo.yaml [--images dir | --queries root]
"""

from __future__ import annotations

import json
import sys

from ray.exceptions import RayError

from diffrep import storage
from diffrep.config import ConfigError, load_job_config
from diffrep.index.manifest import IndexIntegrityError
from diffrep.logs import setup_logging
from diffrep.progress import Progress
from diffrep.ray_utils import init_ray
from diffrep.resources import Ask, fit_config
from diffrep.search import LocalShards, RayShards, Searcher, open_index, wants_shard_actors
from diffrep.search.config import SearchConfig, validate
from diffrep.search.queries import ImageQueries, image_embedder, load_queries
from diffrep.search.report import TopQueries, report_url, write_search_report
from diffrep.search.results import ResultsWriter, hits_table, results_schema
from diffrep.search.training_regions import TrainingRegions


def main(argv: list[str] | None = None) -> int:
    log = setup_logging()
    try:
        cfg = load_job_config(SearchConfig, "search", argv, description=__doc__)
        validate(cfg)
        handle = open_index(cfg.root, cfg.model, verify_files="metadata" if cfg.verify else False)
        use_actors = wants_shard_actors(cfg.shard_actors, handle)
        if cfg.verify and not use_actors:
            handle.verify_shards()  # shard actors verify their own shard
        embedder = image_embedder(cfg, handle) if cfg.images is not None else None
        queries = load_queries(cfg, handle, embedder)
    except (ConfigError, IndexIntegrityError) as exc:
        log.error("%s", exc)
        return 2
    if use_actors:
        init_ray(cfg.ray_address)
        try:
            cfg = fit_config(cfg, "search", [Ask(
                "shard actors", len(handle.shard_files()), cfg.shard_actor_cpus,
                cpus_key="search.shard_actor_cpus", cpus_fit="share")])
            backend = RayShards(handle, num_cpus=cfg.shard_actor_cpus, threads=1)
        except (ConfigError, RayError) as exc:  # RayError: a shard actor's verification error
            log.error("search: %s", exc)
            return 2
    else:
        backend = LocalShards(handle)
    spec = queries.regions if isinstance(queries, ImageQueries) else None
    searcher = Searcher(handle, backend, nprobe=cfg.nprobe,
                        candidate_regions=TrainingRegions.for_spec(handle, embedder, spec))
    progress = Progress("search", queries.num_batches(cfg.batch_size), unit="batches", item="queries")
    out = cfg.out or storage.join(cfg.root, "search", handle.layout.base.rsplit("/", 1)[-1],
                                  "results.parquet")
    report = isinstance(queries, ImageQueries) and cfg.report
    top = TopQueries(cfg.report_queries, min(cfg.report_matches, cfg.k))
    with ResultsWriter(out, results_schema(regions=spec is not None), handle, cfg.name_rows) as results:
        for batch in queries.batches(cfg.batch_size):
            hits = searcher.search(batch.vectors, cfg.k, rerank=cfg.rerank, candidates=cfg.candidates,
                                   regions=batch.regions)
            table = hits_table(batch.keys, hits)
            results.write(table)
            if report:
                top.add(table)
            progress.update(len(batch.keys), batch.skipped)
            progress.report(every_s=10)
    log.info("%s", progress.line())
    log.info("search: %d queries, %d result rows -> %s", progress.items_done, results.rows, out)
    log.info("search: routing %s", json.dumps(backend.stats.as_dict()))
    if report:
        url = write_search_report(handle, top, report_url(out), spec is not None, cfg.report_threshold)
        log.info("search: report -> %s", url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
