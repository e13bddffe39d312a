"""The search job's report for image queries: each query beside its best matches in the
training set, with the matched region's box drawn on the query (region matching).

Memory: the report holds only the queries and training images it shows (TopQueries:
`max_queries` x `per_query` rows at most, kept while the results stream by), the training
images read back by key (diffrep.report.images).
"""

from __future__ import annotations

import heapq
import logging
from collections import defaultdict

import numpy as np
import pyarrow as pa

from diffrep import storage
from diffrep.data.images import SkipSample, decode_image
from diffrep.report.html import esc, figure, page, thumbnail_data_uri
from diffrep.report.images import draw_box
from diffrep.search.index import IndexHandle

log = logging.getLogger("diffrep")

STYLE = ("<style>.query{display:flex;flex-wrap:wrap;gap:6px;padding:6px;border:1px solid #ddd;"
         "margin:6px 0}.query figure:first-child{border-right:3px solid #888;padding-right:6px}</style>")


def report_url(results_url: str) -> str:
    """Where the report of a results parquet goes: beside it, `.html` for `.parquet`."""
    stem = results_url[:-len(".parquet")] if results_url.endswith(".parquet") else results_url
    return f"{stem}.html"


class TopQueries:
    """The `max_queries` queries with the highest top-1 score among the result tables
    given to `add` (diffrep.search.results.hits_table's, one batch each), each with its
    `per_query` best rows. Holds at most max_queries x per_query rows, whatever the number
    of queries; the report names them (key, caption) from the id map."""

    def __init__(self, max_queries: int, per_query: int):
        self.max_queries, self.per_query = max_queries, per_query
        self.queries = 0
        self._heap: list[tuple[float, int, list[dict]]] = []  # (top-1, -order, rows); ties: earlier wins

    def add(self, results: pa.Table) -> None:
        by_query: dict[str, list[dict]] = defaultdict(list)
        for r in results.to_pylist():
            if r["rank"] < self.per_query:
                by_query[r["query_key"]].append(r)
        for rows in by_query.values():
            self.queries += 1
            entry = (max(r["similarity"] for r in rows), -self.queries, sorted(rows, key=lambda r: r["rank"]))
            if len(self._heap) < self.max_queries:
                heapq.heappush(self._heap, entry)
            elif entry[:2] > self._heap[0][:2]:
                heapq.heapreplace(self._heap, entry)

    def best(self) -> list[list[dict]]:
        """Each kept query's rows, best query first."""
        return [rows for *_, rows in sorted(self._heap, key=lambda e: e[:2], reverse=True)]


def write_search_report(handle: IndexHandle, top: TopQueries, url: str, regions: bool,
                        threshold: float | None = None) -> str:
    """Write a self-contained HTML page of the queries `top` kept, best first, each beside
    its best matches (score, whole-image similarity when `regions` were used, key and
    caption); the query keys are image paths. `threshold`: scores above it are flagged.
    Returns url."""
    queries = top.best()
    shown = [r for rows in queries for r in rows]
    names = handle.lookup(np.array([r["id"] for r in shown], np.int64), columns=["key", "caption"])
    for r, named in zip(shown, names.to_pylist(), strict=True):
        r.update(named)
    train = handle.corpus_images([r["id"] for r in shown], [r["key"] for r in shown])
    blocks = []
    for matches in queries:
        q = matches[0]["query_key"]
        image = _query_image(q)
        if image is not None and regions:
            image = draw_box(image, matches[0]["box"])
        box = f"; best region ({', '.join(f'{v:.2f}' for v in matches[0]['box'])})" if regions else ""
        parts = [figure(thumbnail_data_uri(image) if image is not None else None, f"query {q}{box}")]
        for r in matches:
            flag = " MATCH" if threshold is not None and r["similarity"] > threshold else ""
            whole = f"; whole image {r['global_similarity']:.3f}" if regions else ""
            img = train.get(r["key"])
            parts.append(figure(thumbnail_data_uri(img) if img is not None else None,
                                f"#{r['rank'] + 1} {r['key']}: {r['similarity']:.3f}{flag}{whole}; "
                                f"{r['caption'] or ''}"))
        blocks.append(f"<div class='query'>{''.join(parts)}</div>")
    score = ("region score (best similarity of any crop of the query to the training image; "
             "the box is drawn on the query)" if regions else "similarity")
    body = (f"{STYLE}<p>Index {esc(handle.model)} ({handle.ntotal} images); {top.queries} queries, "
            f"the {len(queries)} with the highest top-1 score shown, best first, each with its "
            f"{top.per_query} best matches ranked by {esc(score)}"
            + (f"; above {threshold}: MATCH" if threshold is not None else "") + ".</p>"
            + "".join(blocks))
    storage.write_bytes(url, page("Image search", body).encode())
    return url


def _query_image(path: str):
    try:
        return decode_image(storage.read_bytes(path)).image
    except (OSError, SkipSample) as exc:
        log.warning("search report: query %s unreadable: %s", path, exc)
        return None
