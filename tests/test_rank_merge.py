"""The ranking's k-way merge of score shards equals one in-memory sort (ties, empty shards,
batches smaller than shards), and its quantiles equal numpy's."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from diffrep.rank.merge import merge_runs, sort_run

SCHEMA = pa.schema([("caption_id", pa.int64()), ("caption", pa.string()), ("dcs", pa.float32()),
                    ("noise_magnitude", pa.float32()), ("keys", pa.list_(pa.string()))])


@pytest.mark.parametrize("batch_rows", [7, 1000])
def test_merge_of_sorted_shards_equals_a_plain_sort(tmp_path, batch_rows):
    rng = np.random.default_rng(0)
    sizes = [0, 120, 1, 57, 300, 0, 33]
    tables, next_id = [], 0
    for i, n in enumerate(sizes):
        dcs = rng.choice(np.linspace(0, 1, 40), n).astype(np.float32)  # many ties across shards
        ids = np.arange(next_id, next_id + n, dtype=np.int64)[rng.permutation(n)]
        next_id += n
        t = pa.table({"caption_id": ids, "caption": [f"c{j}" for j in ids], "dcs": dcs,
                      "noise_magnitude": rng.random(n).astype(np.float32),
                      "keys": [[f"k{j}"] for j in ids]}, schema=SCHEMA)
        pq.write_table(t, tmp_path / f"s{i}.parquet")
        tables.append(t)
    runs = []
    for i in range(len(sizes)):
        runs.append(str(tmp_path / f"r{i}.parquet"))
        assert sort_run(str(tmp_path / f"s{i}.parquet"), runs[-1]) == sizes[i]
    top, quantiles, n = merge_runs(runs, str(tmp_path / "ranked.parquet"), top_n=25,
                                   batch_rows=batch_rows)
    want = pa.concat_tables(tables).sort_by([("dcs", "descending"), ("caption_id", "ascending")])
    got = pq.read_table(tmp_path / "ranked.parquet")
    assert n == sum(sizes) == len(got)
    assert got["rank"].to_pylist() == list(range(1, n + 1))
    assert got.drop(["rank"]).equals(want)
    assert top.drop(["rank"]).equals(want.slice(0, 25))
    all_dcs = want["dcs"].to_numpy()
    for q, value in quantiles.items():
        assert value == pytest.approx(float(np.quantile(all_dcs, float(q))), abs=1e-6)


def test_no_scores_no_ranking(tmp_path):
    assert merge_runs([], str(tmp_path / "ranked.parquet"), top_n=5) == (None, {}, 0)
