"""Lists renumbered so that near centroids get near ids (diffrep.index.locality): a query's
probed lists then fall in fewer shards' runs, and the index returns the same neighbours."""

from __future__ import annotations

import faiss
import numpy as np

from diffrep.index import lists
from diffrep.index.build import deserialize, serialize
from diffrep.index.locality import locality_order, renumber_lists
from diffrep.synthetic import clustered_vectors

DIM = 32


def shards_per_query(index: faiss.Index, queries: np.ndarray, nprobe: int, num_shards: int) -> float:
    """Mean number of shards owning a query's probed lists, the shards cut as the build
    cuts them (diffrep.index.lists.partition on the list sizes)."""
    ivf = faiss.extract_index_ivf(index)
    owner = lists.owner_of_new_entries(
        [(p["first_list"], p["last_list"]) for p in lists.partition(lists.list_sizes(index), num_shards)], ivf.nlist)
    _, probed = ivf.quantizer.search(queries, nprobe)
    return float(np.mean([len(set(owner[row].tolist())) for row in probed]))


def test_locality_order_is_a_permutation_and_deterministic():
    centroids = clustered_vectors(500, DIM, clusters=20, seed=1)
    order = locality_order(centroids)
    np.testing.assert_array_equal(np.sort(order), np.arange(500))
    np.testing.assert_array_equal(order, locality_order(centroids))
    same = np.zeros((40, DIM), np.float32)  # points k-means cannot tell apart still get an order
    np.testing.assert_array_equal(np.sort(locality_order(same)), np.arange(40))


def test_renumbered_lists_put_a_querys_lists_in_fewer_shards_and_find_the_same_neighbours():
    # 20 topics with ~50 lists each: a query's 4 probed lists are near each other in space
    x = clustered_vectors(60_000, DIM, clusters=20, seed=2)
    rng = np.random.default_rng(3)
    queries = x[rng.choice(len(x), 1000, replace=False)] + 0.05 * rng.standard_normal((1000, DIM)).astype(np.float32)
    trained = faiss.index_factory(DIM, "IVF1024,Flat", faiss.METRIC_INNER_PRODUCT)
    trained.cp.min_points_per_centroid = 1
    trained.train(x)
    renumbered = deserialize(serialize(trained))
    assert renumber_lists(renumbered)
    for index in (trained, renumbered):
        index.add(x)
        index.nprobe = 4
    before = shards_per_query(trained, queries, 4, num_shards=8)
    after = shards_per_query(renumbered, queries, 4, num_shards=8)
    assert after < 0.6 * before, (before, after)  # measured 3.31 -> 1.36

    # the same centroids probed under other numbers: the same neighbours at the same scores
    sims_a, ids_a = trained.search(queries, 10)
    sims_b, ids_b = renumbered.search(queries, 10)
    np.testing.assert_allclose(sims_a, sims_b, rtol=1e-5, atol=1e-6)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids_a, ids_b, strict=True)]) > 0.999

    # a filled index is never renumbered (its entries are filed under the old numbers)
    assert not renumber_lists(renumbered)
