"""diffrep.search.stored: stored embeddings by global id, over many files and slices."""

import pickle

import numpy as np
import pytest

from diffrep import storage
from diffrep.embed.layout import ModelOutput
from diffrep.index.plan import SliceSpec
from diffrep.search import stored
from diffrep.search.stored import StoredVectors


@pytest.fixture
def corpus(tmp_path):
    """7 embedding files of uneven sizes in 3 slices (the last slice first in the list)."""
    rng = np.random.default_rng(0)
    out = ModelOutput(str(tmp_path), "m")
    sizes = [5, 1, 9, 3, 7, 2, 4]
    names = [f"{i:05d}" for i in range(len(sizes))]
    full = []
    for name, rows in zip(names, sizes, strict=True):
        x = rng.standard_normal((rows, 8)).astype(np.float16)
        storage.write_npy(out.embeddings(name), x)
        full.append(x.astype(np.float32))
    slices = [SliceSpec(2, tuple(names[5:]), tuple(sizes[5:]), 25, 6),
              SliceSpec(0, tuple(names[:3]), tuple(sizes[:3]), 0, 15),
              SliceSpec(1, tuple(names[3:5]), tuple(sizes[3:5]), 15, 10)]
    return str(tmp_path), slices, np.concatenate(full), names, sizes


def test_vectors_by_global_id_equal_the_concatenated_files(corpus, monkeypatch):
    root, slices, full, names, sizes = corpus
    monkeypatch.setattr(stored, "MAX_OPEN", 2)  # fewer maps than files: the LRU evicts
    sv = StoredVectors(root, "m", slices)
    ids = np.random.default_rng(1).integers(0, len(full), 200)
    np.testing.assert_array_equal(sv.vectors(ids, 8), full[ids])
    assert len(sv._maps) == 2
    first = np.cumsum([0] + sizes)
    for name, rows, sel in sv.locate(ids):
        f = names.index(name)
        np.testing.assert_array_equal(ids[sel], first[f] + rows)
        assert ((rows >= 0) & (rows < sizes[f])).all()
    assert sum(len(sel) for _, _, sel in sv.locate(ids)) == len(ids)
    again = pickle.loads(pickle.dumps(sv))  # sent to a worker: no maps, a working lock
    assert not again._maps
    np.testing.assert_array_equal(again.vectors(ids[:10], 8), full[ids[:10]])


def test_dots_equal_the_gathered_inner_products_in_pair_order(corpus):
    """The re-rank's products: pairs over every file, an id in many pairs, a query in many,
    in blocks smaller than a file's share; each pair's value lands at its own position."""
    root, slices, full, _, _ = corpus
    sv = StoredVectors(root, "m", slices)
    rng = np.random.default_rng(2)
    queries = rng.standard_normal((13, 8)).astype(np.float32)
    ids = rng.integers(0, len(full), 500)
    query_of = rng.integers(0, len(queries), 500)
    want = np.einsum("nd,nd->n", full[ids], queries[query_of])
    for block in (3, 1000):
        np.testing.assert_allclose(sv.dots(ids, queries, query_of, block=block), want, rtol=1e-5, atol=1e-5)
    assert sv.dots(np.zeros(0, np.int64), queries, np.zeros(0, np.int64)).shape == (0,)
    with pytest.raises(ValueError, match="dims"):
        sv.dots(ids, queries[:, :4], query_of)


def test_out_of_range_ids_are_refused(corpus):
    root, slices, full, _, _ = corpus
    sv = StoredVectors(root, "m", slices)
    assert sv.locate(np.zeros(0, np.int64)) == []
    for bad in ([-1], [len(full)]):
        with pytest.raises(IndexError, match="out of range"):
            sv.vectors(np.array(bad), 8)


def test_region_sample_draws_from_few_shards_without_one_entry_per_image(corpus):
    """The scan's region baseline sample (diffrep.scan.baseline.region_sample) reads the
    embedding files' id ranges: the same sample as locating every id (the cached baselines
    of earlier scans stay valid), drawn only from `max_shards` files."""
    from types import SimpleNamespace

    from diffrep.scan.baseline import region_sample

    root, slices, _, names, sizes = corpus
    handle = SimpleNamespace(stored=StoredVectors(root, "m", slices))
    for seed in range(5):
        sample = region_sample(handle, 6, seed, max_shards=2)
        # the reference: every id located, grouped by file, as region_sample did before
        rng = np.random.default_rng(seed)
        by_shard: dict[str, list[int]] = {}
        for shard, _, sel in handle.stored.locate(np.arange(handle.stored.ntotal)):
            by_shard.setdefault(shard, []).extend(sel.tolist())
        shards = sorted(by_shard)
        chosen = rng.choice(len(shards), size=2, replace=False)
        pool = np.sort(np.concatenate([np.asarray(by_shard[shards[i]], np.int64) for i in chosen]))
        expected = np.sort(rng.choice(pool, size=min(6, len(pool)), replace=False))
        np.testing.assert_array_equal(sample, expected)
        files = {shard for shard, _, _ in handle.stored.locate(sample)}
        assert len(files) <= 2 and len(sample) == min(6, len(pool))


@pytest.mark.parametrize("sizes", [[100] * 7 + [37], [100] * 7 + [250], [5, 1, 9, 3, 7, 2, 4], [100, 100, 50, 100]])
def test_locate_in_equals_a_binary_search_with_uniform_and_uneven_files(sizes):
    """file_of divides where the files (but the last) are one length, else searches: the
    same files, rows and order either way, with positions in the last file past the stride."""
    from diffrep.index.plan import file_of, locate_in

    first = np.cumsum([0] + sizes)[:-1] + 1000  # global positions need not start at 0
    names = [f"f{i}" for i in range(len(sizes))]
    positions = np.random.default_rng(2).integers(1000, 1000 + sum(sizes), 5000)
    which = np.searchsorted(first, positions, side="right") - 1
    np.testing.assert_array_equal(file_of(positions, first), which)
    got = locate_in(positions, first, names)
    assert [name for name, _, _ in got] == [names[f] for f in np.unique(which)]
    for name, rows, sel in got:
        f = names.index(name)
        np.testing.assert_array_equal(which[sel], f)
        np.testing.assert_array_equal(rows, positions[sel] - first[f])
        assert (np.diff(sel) > 0).all()  # positions' own order inside a file
    assert sorted(np.concatenate([sel for _, _, sel in got]).tolist()) == list(range(len(positions)))


def test_best_first_orders_as_lexsort_with_ties_infinities_signed_zeros_and_missing_ids():
    """The int64-key sort equals np.lexsort((ids, -sims)) row by row, and large ids or
    float64 similarities take lexsort itself."""
    from diffrep.index.vectors import best_first

    rng = np.random.default_rng(3)
    sims = rng.choice(np.float32([-np.inf, -1.0, -0.5, -0.0, 0.0, 0.25, 0.5, 0.999, 1.0, np.inf]), (300, 40))
    ids = rng.integers(-1, 50, (300, 40))
    ids[:, -1] = (1 << 32) - 2  # the largest id the key holds
    want = np.lexsort((ids, -sims), axis=-1)
    np.testing.assert_array_equal(np.take_along_axis(sims, best_first(sims, ids), 1),
                                  np.take_along_axis(sims, want, 1))
    np.testing.assert_array_equal(np.take_along_axis(ids, best_first(sims, ids), 1),
                                  np.take_along_axis(ids, want, 1))
    big = ids.copy()
    big[0, 0] = 1 << 40
    np.testing.assert_array_equal(best_first(sims, big), np.lexsort((big, -sims), axis=-1))
    np.testing.assert_array_equal(best_first(sims.astype(np.float64), ids), want)
