"""Pages of the jobs' parquet outputs, queried with DuckDB: scan generations filtered and
sorted, duplicate groups and their members and pairs, caption rankings with their labels.

Memory: DuckDB streams the parquet files of one run (projection and filter pushed down);
a request holds one page of rows (page_size, at most MAX_PAGE_SIZE) and a count. Every
value a request sends is a bound parameter; the only names in the SQL text are folders
the Catalog listed and column names from the fixed lists here.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass

import duckdb

from diffrep.serve.catalog import Catalog, NotFound
from diffrep.serve.scan_pages import page_index, page_rows

MAX_PAGE_SIZE = 500
SCAN_SORTS = {"top1_sim", "region_sim", "source_sim"}
SCAN_COLUMNS = ["gen_id", "prompt_id", "prompt", "seed", "resolution", "image_tar", "image_member",
                "top1_id", "top1_key", "top1_sim", "source_key", "source_sim", "match_ids",
                "match_keys", "match_captions", "match_sims", "region_id", "region_key",
                "region_sim", "region_global_sim", "region_box"]


@dataclass
class Page:
    """One page of rows (dicts) and the number of rows matching the request."""

    rows: list[dict]
    total: int
    page: int
    page_size: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.page_size))


def _glob(path) -> str:
    return str(path).replace("'", "''")


class Tables:
    """Queries over one root. DuckDB connections are not shared between threads: each
    thread (the app's request threads) gets its own cursor of one in-memory database."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self._db = duckdb.connect(":memory:")
        self._local = threading.local()

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cur = getattr(self._local, "cursor", None)
        if cur is None:
            cur = self._local.cursor = self._db.cursor()
        return cur

    def _page(self, source: str, where: list[str], params: list, order: str, columns: str,
              page: int, page_size: int) -> Page:
        if page < 1 or not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page must be >= 1 and page_size in 1..{MAX_PAGE_SIZE}")
        cond = (" WHERE " + " AND ".join(where)) if where else ""
        cur = self._cursor()
        total = cur.execute(f"SELECT count(*) FROM {source}{cond}", params).fetchone()[0]
        rel = cur.execute(f"SELECT {columns} FROM {source}{cond} ORDER BY {order} LIMIT ? OFFSET ?",
                          [*params, page_size, (page - 1) * page_size])
        names = [d[0] for d in rel.description]
        return Page([dict(zip(names, r, strict=True)) for r in rel.fetchall()], int(total), page, page_size)

    # -- scans ---------------------------------------------------------------------------

    def generations(self, run: str, checkpoint: str | None = None, prompt: str | None = None,
                    seed: int | None = None, min_score: float | None = None,
                    max_score: float | None = None, sort: str = "top1_sim", page: int = 1,
                    page_size: int = 50) -> Page:
        """Generations of scan `run` (one checkpoint label or all), filtered by prompt
        substring (case-insensitive), seed and score range (on `sort`), best first; read
        through the run's page index (diffrep.serve.scan_pages)."""
        if sort not in SCAN_SORTS:
            raise ValueError(f"sort must be one of {sorted(SCAN_SORTS)}")
        if page < 1 or not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page must be >= 1 and page_size in 1..{MAX_PAGE_SIZE}")
        run_dir = self.catalog.scan_dir(run, checkpoint)
        cur = self._cursor()
        index = page_index(cur, run_dir, self.catalog.root / "serve_cache" / "pages")
        where, params = [], []
        for sql, value in (("label = ?", checkpoint), ("prompt ILIKE ?", f"%{prompt}%" if prompt else None),
                           ("seed = ?", seed), (f"{sort} >= ?", min_score), (f"{sort} <= ?", max_score)):
            if value is not None:
                where.append(sql)
                params.append(value)
        rows, total = page_rows(cur, index, where, params, sort, (page - 1) * page_size, page_size,
                                SCAN_COLUMNS)
        return Page(rows, total, page, page_size)

    def scan_summary(self, run: str) -> dict:
        path = self.catalog.scan_dir(run) / "summary.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    # -- dedup ---------------------------------------------------------------------------

    def groups(self, model: str, min_size: int = 2, page: int = 1, page_size: int = 50) -> Page:
        """Duplicate groups of `model`'s dedup report, largest first."""
        files = self.catalog.dedup_dir(model) / "group_stats" / "*.parquet"
        return self._page(f"read_parquet('{_glob(files)}')", ["size >= ?"], [int(min_size)],
                          "size DESC, group_id", "*", page, page_size)

    def group_members(self, model: str, group_id: int, page: int = 1, page_size: int = 100) -> Page:
        """A group's images, its representative first."""
        files = self.catalog.dedup_dir(model) / "groups" / "*.parquet"
        rows = self._page(f"read_parquet('{_glob(files)}')", ["group_id = ?"], [int(group_id)],
                          "is_representative DESC, id", "key, id, url, caption, is_representative",
                          page, page_size)
        if not rows.total:
            raise NotFound(f"no group {group_id} in the dedup report of {model!r}")
        return rows

    def group_previews(self, model: str, group_ids: list[int], per_group: int) -> dict[int, list[dict]]:
        """{group_id: its first `per_group` members (representative first)} for one page
        of groups, in one query."""
        if not group_ids:
            return {}
        files = self.catalog.dedup_dir(model) / "groups" / "*.parquet"
        marks = ",".join("?" * len(group_ids))
        rel = self._cursor().execute(
            f"SELECT group_id, id, key FROM (SELECT group_id, id, key, row_number() OVER (PARTITION BY "
            f"group_id ORDER BY is_representative DESC, id) AS n FROM read_parquet('{_glob(files)}') "
            f"WHERE group_id IN ({marks})) WHERE n <= ? ORDER BY group_id, n",
            [*map(int, group_ids), int(per_group)])
        out: dict[int, list[dict]] = {}
        for gid, id_, key in rel.fetchall():
            out.setdefault(gid, []).append({"id": id_, "key": key})
        return out

    def group_pairs(self, model: str, group_id: int, page: int = 1, page_size: int = 100) -> Page:
        """The group's above-threshold pairs, most similar first (both images of a pair
        are in one group, so joining on the first is enough)."""
        d = self.catalog.dedup_dir(model)
        source = (f"read_parquet('{_glob(d / 'pairs' / '*.parquet')}') p JOIN "
                  f"(SELECT id FROM read_parquet('{_glob(d / 'groups' / '*.parquet')}') "
                  f"WHERE group_id = ?) g ON p.id_a = g.id")
        return self._page(source, [], [int(group_id)], "similarity DESC, key_a, key_b",
                          "key_a, key_b, id_a, id_b, similarity", page, page_size)

    def dedup_summary(self, model: str) -> dict:
        path = self.catalog.dedup_dir(model) / "summary.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    # -- rankings ------------------------------------------------------------------------

    def ranking(self, run: str, label: str | None = None, caption: str | None = None,
                page: int = 1, page_size: int = 50) -> Page:
        """Captions of ranking `run` in rank order, with the ground truth of those that
        were labelled (label, distances, the generations' tar and members)."""
        d = self.catalog.ranking_dir(run)
        truth = list((d / "truth").glob("*.parquet"))
        joined = f"read_parquet('{_glob(d / 'ranked.parquet')}') r"
        if truth:
            joined += (f" LEFT JOIN (SELECT caption_id, label, ecs, matching_distance, "
                       f"retrieval_distance, template_distance, top_neighbour_key, images, image_tar "
                       f"FROM read_parquet('{_glob(d / 'truth' / '*.parquet')}')) t USING (caption_id)")
            columns = ("r.rank, r.caption_id, r.caption, r.images AS copies, r.duplication, r.keys, "
                       "r.dcs, r.noise_magnitude, t.label, t.ecs, t.matching_distance, "
                       "t.retrieval_distance, t.template_distance, t.top_neighbour_key, "
                       "t.images AS generations, t.image_tar")
        else:
            columns = ("r.rank, r.caption_id, r.caption, r.images AS copies, r.duplication, r.keys, "
                       "r.dcs, r.noise_magnitude, NULL AS label")
        where, params = [], []
        if label:
            if not truth:
                raise NotFound(f"ranking {run!r} has no ground truth to filter by")
            where.append("t.label = ?")
            params.append(label)
        if caption:
            where.append("r.caption ILIKE ?")
            params.append(f"%{caption}%")
        return self._page(joined, where, params, "r.rank", columns, page, page_size)

    def ranking_summary(self, run: str) -> dict:
        path = self.catalog.ranking_dir(run) / "summary.json"
        return json.loads(path.read_text()) if path.is_file() else {}
