"""Pages of a scan run's generations at millions of rows.

A scan writes one small parquet file per work unit, so a page sorted by score would read
every file's rows to find 50. The first request for a run writes its page index instead:
one parquet file under <root>/serve_cache/pages/ with, per generation, its checkpoint
label, file and row, the filterable columns (prompt, seed, the three scores) and each
score's rank, sorted by the top-1 rank. A page is then two reads: the index (only its
small columns; an unfiltered top-1 page only the row group holding its ranks) and the
page's own rows in their files. The index is named by the run's file list (names, sizes,
times), so a run that grows or changes gets a new one; older ones of the run are removed.

Memory: DuckDB streams the generations into the index (its rank windows spill to disk
beyond its memory limit); a request holds one page.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import duckdb

RANKS = {"top1_sim": "rank_top1", "region_sim": "rank_region", "source_sim": "rank_source"}
ROW_GROUP = 65_536


def _quote(path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def page_index(cur: duckdb.DuckDBPyConnection, run_dir: Path, cache_dir: Path) -> Path:
    """The run's page index (written now if the run changed since the last one)."""
    files = sorted(run_dir.glob("generations/*/*.parquet"))
    sig = hashlib.sha256()
    for f in files:
        st = f.stat()
        sig.update(f"{f.relative_to(run_dir)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    path = cache_dir / f"{run_dir.name}-{sig.hexdigest()[:20]}.parquet"
    if path.exists():
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{uuid.uuid4().hex}")
    ranks = ", ".join(f"row_number() OVER (ORDER BY {score} DESC NULLS LAST, filename, file_row_number) "
                      f"AS {rank}" for score, rank in RANKS.items())
    glob = _quote(run_dir / "generations" / "*" / "*.parquet")
    cur.execute(
        f"COPY (SELECT regexp_extract(filename, '/generations/([^/]+)/[^/]+$', 1) AS label, "
        f"filename AS file, file_row_number AS row, prompt, seed, top1_sim, region_sim, source_sim, "
        f"{ranks} FROM read_parquet({glob}, filename=true, file_row_number=true, union_by_name=true) "
        f"ORDER BY rank_top1) TO {_quote(tmp)} (FORMAT parquet, ROW_GROUP_SIZE {ROW_GROUP})")
    os.replace(tmp, path)
    for old in cache_dir.glob(f"{run_dir.name}-*.parquet"):
        if old != path:
            old.unlink(missing_ok=True)
    return path


def page_rows(cur: duckdb.DuckDBPyConnection, index: Path, where: list[str], params: list,
              sort: str, offset: int, limit: int, columns: list[str]) -> tuple[list[dict], int]:
    """One page (rows with `columns` and label, in `sort` order) and the matching count."""
    rank = RANKS[sort]
    cond = (" WHERE " + " AND ".join(where)) if where else ""
    total = cur.execute(f"SELECT count(*) FROM read_parquet({_quote(index)}){cond}", params).fetchone()[0]
    if where:
        picked = cur.execute(f"SELECT label, file, row FROM read_parquet({_quote(index)}){cond} "
                             f"ORDER BY {rank} LIMIT ? OFFSET ?", [*params, limit, offset]).fetchall()
    else:  # ranks are 1..N: a range, pruned by the row groups' statistics for the top-1 order
        picked = cur.execute(f"SELECT label, file, row FROM read_parquet({_quote(index)}) "
                             f"WHERE {rank} > ? AND {rank} <= ? ORDER BY {rank}",
                             [offset, offset + limit]).fetchall()
    if not picked:
        return [], int(total)
    files = "[" + ", ".join(_quote(f) for f in sorted({p[1] for p in picked})) + "]"
    values = ", ".join("(?, ?)" for _ in picked)
    rel = cur.execute(
        f"SELECT filename, file_row_number, {', '.join(columns)} FROM read_parquet({files}, filename=true, "
        f"file_row_number=true, union_by_name=true) t SEMI JOIN (VALUES {values}) v(f, n) "
        f"ON t.filename = v.f AND t.file_row_number = v.n", [x for p in picked for x in p[1:]])
    names = [d[0] for d in rel.description]
    found = {(r[0], r[1]): dict(zip(names[2:], r[2:], strict=True)) for r in rel.fetchall()}
    return [{"label": label, **found[(f, n)]} for label, f, n in picked if (f, n) in found], int(total)
