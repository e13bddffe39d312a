"""Scan pages through the run's page index (diffrep.serve.scan_pages) against a plain
sort of every row, with filters; the index follows the run when a unit file is added."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from diffrep.scan.worker import GENERATION_SCHEMA
from diffrep.serve.catalog import Catalog
from diffrep.serve.tables import Tables


def write_unit(run_dir, label: str, unit: int, rows: int, rng) -> pa.Table:
    sims = rng.random(rows).astype(np.float32)
    sims[rng.random(rows) < 0.1] = 0.5  # ties, broken by file and row
    table = pa.table({
        "gen_id": [f"{label}/{unit}/{i}" for i in range(rows)], "checkpoint": [label] * rows,
        "prompt_id": list(range(rows)), "prompt": [f"a photo of thing {i % 7}" for i in range(rows)],
        "seed": [int(s) for s in rng.integers(0, 3, rows)], "top1_sim": sims,
        "source_sim": [None if i % 3 == 0 else float(v) for i, v in enumerate(rng.random(rows))],
        "image_tar": ["x.tar"] * rows, "image_member": [f"{i}.png" for i in range(rows)]})
    out = run_dir / "generations" / label / f"{unit:05d}.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    full = pa.table({f.name: (table[f.name] if f.name in table.column_names else pa.nulls(rows, f.type))
                     for f in GENERATION_SCHEMA}).cast(GENERATION_SCHEMA)
    pq.write_table(full, out)
    return full.append_column("label", pa.array([label] * rows)).append_column(
        "file", pa.array([str(out)] * rows)).append_column("row", pa.array(range(rows), pa.int64()))


@pytest.mark.parametrize("sort", ["top1_sim", "source_sim"])
def test_pages_equal_a_plain_sort_with_filters(tmp_path, sort):
    rng = np.random.default_rng(0)
    run_dir = tmp_path / "scans" / "big"
    tables = [write_unit(run_dir, f"ckpt-{u % 3}", u, int(rng.integers(5, 40)), rng) for u in range(60)]
    rows = pa.concat_tables(tables).to_pylist()
    t = Tables(Catalog.of(str(tmp_path)))

    def plain(keep) -> list[str]:
        kept = [r for r in rows if keep(r)]
        kept.sort(key=lambda r: (r[sort] is None, -(r[sort] or 0), r["file"], r["row"]))
        return [r["gen_id"] for r in kept]

    cases = [({}, lambda r: True),
             ({"checkpoint": "ckpt-1"}, lambda r: r["label"] == "ckpt-1"),
             ({"prompt": "THING 3", "seed": 1}, lambda r: r["prompt"].endswith("3") and r["seed"] == 1),
             ({"min_score": 0.25, "max_score": 0.75},
              lambda r: r[sort] is not None and 0.25 <= r[sort] <= 0.75)]
    for kwargs, keep in cases:
        want = plain(keep)
        got = []
        for page in range(1, len(want) // 37 + 3):
            p = t.generations("big", **kwargs, sort=sort, page=page, page_size=37)
            assert p.total == len(want)
            got += [r["gen_id"] for r in p.rows]
        assert got == want, kwargs


def test_the_page_index_follows_the_run(tmp_path):
    rng = np.random.default_rng(1)
    run_dir = tmp_path / "scans" / "growing"
    write_unit(run_dir, "a", 0, 10, rng)
    t = Tables(Catalog.of(str(tmp_path)))
    assert t.generations("growing").total == 10
    first = list((tmp_path / "serve_cache" / "pages").glob("growing-*.parquet"))
    write_unit(run_dir, "a", 1, 5, rng)  # the scan went on
    assert t.generations("growing").total == 15
    now = list((tmp_path / "serve_cache" / "pages").glob("growing-*.parquet"))
    assert len(first) == len(now) == 1 and first != now  # rebuilt, the old one removed
