"""List-partitioned shards and routed search: the routed path against exact search
(IndexFlatIP) and against the fan-out to every shard (the same results on the same index),
the list partition itself, incremental adds, indexes built before list partitioning, and
dedup on IVF-PQ against exact pairs."""

from __future__ import annotations

import dataclasses
import json
import shutil

import faiss
import numpy as np
import pyarrow.parquet as pq
import pytest

from diffrep.config import ConfigError
from diffrep.dedup.config import DedupConfig
from diffrep.dedup.run import run_dedup
from diffrep.executor import LocalExecutor, RayExecutor
from diffrep.index import lists
from diffrep.index.builder import build
from diffrep.index.config import IndexConfig
from diffrep.index.layout import IndexLayout
from diffrep.index.manifest import describe_files
from diffrep.search import LocalShards, RayShards, Searcher, open_index
from diffrep.synthetic import clustered_vectors, write_embeddings

MODEL = "sscd_onnx"
DIM = 32


def test_list_imbalance_is_the_mean_list_size_a_vector_sits_in_over_the_mean():
    from diffrep.index.lists import imbalance

    assert imbalance(np.full(1024, 977)) == pytest.approx(1.0)
    # the 512-d rehearsal corpus: two lists of 1024 held half of 1M vectors
    sizes = np.r_[[251_411, 243_163], np.full(1022, (1_000_000 - 494_574) // 1022)]
    assert imbalance(sizes) > 100
    assert imbalance(np.zeros(8)) == 1.0


def test_partition_balances_lists_and_covers_every_list():
    rng = np.random.default_rng(0)
    sizes = rng.integers(0, 200, 500)
    sizes[::7] = 0  # empty lists, some at cuts
    cuts = lists.partition(sizes, 4)
    held = [c["end"] - c["start"] for c in cuts]
    assert sum(held) == sizes.sum() and max(held) - min(held) <= 1
    owner = lists.owner_of_new_entries([(c["first_list"], c["last_list"]) for c in cuts], len(sizes))
    assert (owner >= 0).all() and (np.diff(owner) >= 0).all()  # contiguous runs, every list owned
    # the entries each shard holds are exactly those of its lists (two shards share a cut list)
    ends = np.cumsum(sizes)
    for c in cuts:
        lo, hi = c["first_list"], c["last_list"]
        assert ends[hi] >= c["end"] and ends[lo] - sizes[lo] <= c["start"]
    # fewer lists than shards (the exact IVF1,Flat): the one list is split over every shard
    one = lists.partition(np.array([10]), 3)
    assert [c["end"] - c["start"] for c in one] == [3, 4, 3]
    assert all((c["first_list"], c["last_list"]) == (0, 0) for c in one)


@pytest.fixture(scope="module")
def pq_index(tmp_path_factory):
    """8k x 32 vectors in IVF64_HNSW32,PQ8 over 4 list-partitioned shards."""
    x = clustered_vectors(8000, DIM, clusters=40, seed=3)
    root = str(tmp_path_factory.mktemp("routing"))
    write_embeddings(root, MODEL, x, 1000)
    build(IndexConfig(root=root, model=MODEL, index_key="IVF64_HNSW32,PQ8x8np", exact_below=0,
                      num_shards=4, eval_queries=100), LocalExecutor())
    return root, x


def test_shards_own_disjoint_runs_of_lists_and_hold_every_vector(pq_index):
    root, x = pq_index
    handle = open_index(root, MODEL)
    shards = handle.manifest["shards"]
    assert handle.manifest["partition"] == "lists" and len(shards) == 4
    assert sum(s["ntotal"] for s in shards) == len(x)
    assert lists.balance([s["ntotal"] for s in shards]) < 1.01
    seen: dict[int, int] = {}
    for s in shards:
        index = faiss.read_index(handle.shard_url(s["file"]))
        sizes = lists.list_sizes(index)
        owned = np.nonzero(sizes)[0]
        assert owned.min() >= s["first_list"] and owned.max() <= s["last_list"]
        invlists = faiss.extract_index_ivf(index).invlists
        for lst in owned.tolist():
            ids = faiss.rev_swig_ptr(invlists.get_ids(lst), invlists.list_size(lst)).copy()
            for i in ids.tolist():
                assert i not in seen
                seen[i] = lst
    assert sorted(seen) == list(range(len(x)))


def test_routed_search_equals_the_fan_out_and_finds_the_exact_neighbours(pq_index):
    root, x = pq_index
    handle = open_index(root, MODEL)
    rng = np.random.default_rng(9)
    # queries not in the index: fresh points near the clusters, and noisy copies
    fresh = clustered_vectors(200, DIM, clusters=40, seed=3 + 100)
    noisy = x[rng.choice(len(x), 200, replace=False)] + 0.05 * rng.standard_normal((200, DIM)).astype(np.float32)
    q = np.concatenate([fresh, noisy / np.linalg.norm(noisy, axis=1, keepdims=True)]).astype(np.float32)
    routed = Searcher(handle, LocalShards(handle), nprobe=8)
    fanned = Searcher(handle, LocalShards(handle, route=False), nprobe=8)
    a, b = routed.search(q, 10), fanned.search(q, 10)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_allclose(a.sims, b.sims, rtol=1e-5)
    ra, rb = routed.range_search(q, 0.8, margin=0.1), fanned.range_search(q, 0.8, margin=0.1)
    np.testing.assert_array_equal(ra.query, rb.query)
    np.testing.assert_array_equal(ra.ids, rb.ids)
    assert len(ra.ids) > 100

    flat = faiss.IndexFlatIP(DIM)
    flat.add(x)
    _, truth = flat.search(q, 10)
    # half of the queries are fresh points between clusters: half of the 64 lists probed
    wide = Searcher(handle, LocalShards(handle), nprobe=32).search(q, 10, rerank="exact", candidates=300)
    recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(wide.ids, truth, strict=True)])
    assert recall >= 0.98, recall  # measured 0.991

    # one quantizer search per query (the fan-out: one per shard per query)
    stats = routed.backend.stats.as_dict()
    assert stats["quantizer_searches_per_query"] == 1.0
    assert stats["shards_per_query"] < 4, stats
    fan = fanned.backend.stats.as_dict()
    assert fan["quantizer_searches_per_query"] == 4.0 and fan["shards_per_query"] == 4.0


def test_nprobe_one_asks_one_shard_per_query(pq_index):
    root, x = pq_index
    handle = open_index(root, MODEL)
    routed = Searcher(handle, LocalShards(handle), nprobe=1)
    hits = routed.search(x[:300], 1)
    assert np.mean(hits.ids[:, 0] == np.arange(300)) > 0.6  # PQ codes of a vector vs itself
    # one shard per query, two for a query whose list straddles one of the 3 cuts (measured 1.09)
    assert routed.backend.stats.as_dict()["shards_per_query"] < 1.25


def test_shard_runs_search_each_query_once_per_owner_and_find_the_batch_plans_hits(pq_index):
    """A query set searched shard by shard (ListRouter.shard_runs, the dedup path): every
    (query, owner of a probed list) pair is in exactly one run of at most `batch` rows of
    that owner, the calls are each shard's batches, and the hits are those of the batch
    by batch plan over every shard."""
    from diffrep.search.lists import ListRouter

    root, x = pq_index
    handle = open_index(root, MODEL)
    router = ListRouter.of(handle)
    nprobe, batch = 8, 64
    _, probed, _ = router.assign(x[:500], nprobe)
    probed[::7, -1] = -1  # a probe HNSW did not fill
    shards = len(router.first)
    owned = [(probed >= router.first[s]) & (probed <= router.last[s]) for s in range(shards)]
    expected = {(int(r), s) for s in range(shards) for r in np.nonzero(owned[s].any(axis=1))[0]}
    assert (router.first[1:] == router.last[:-1]).any()  # a cut splits a list: it has two owners
    assert len({o for _, o in expected}) == shards > 1 and len(expected) > 500  # queries probe several
    runs = router.shard_runs(probed, batch)
    got = [(int(r), shard) for shard, rows in runs for r in rows]
    assert len(got) == len(set(got)) and set(got) == expected
    for shard, rows in runs:
        assert 0 < len(rows) <= batch and np.all(np.diff(rows) > 0)
        mine = (probed[rows] >= router.first[shard]) & (probed[rows] <= router.last[shard])
        assert mine.any(axis=1).all()
    per_shard = np.bincount([o for _, o in expected], minlength=shards)
    assert len(runs) == sum(-(-int(c) // batch) for c in per_shard)
    stats = router.stats.as_dict()
    assert stats["batches"] == -(-500 // batch) and stats["shard_calls"] == len(runs)
    assert stats["query_shard_pairs"] == len(expected)

    searcher = Searcher(handle, LocalShards(handle), nprobe=nprobe)
    coarse = np.where(probed >= 0, 1.0, -np.inf).astype(np.float32)  # ranks nothing: range search keeps all
    whole = searcher.range_search(x[:500], 0.6, exact=False, ordered=False, assigned=(probed, coarse))
    by_run = set()
    for shard, rows in runs:
        found = searcher.range_search(x[:500][rows], 0.6, exact=False, ordered=False,
                                      assigned=(probed[rows], coarse[rows]), shard=shard)
        by_run |= {(int(rows[q]), int(i)) for q, i in zip(found.query, found.ids, strict=True)}
    assert len(whole.ids) > 500
    assert by_run == set(zip(whole.query.tolist(), whole.ids.tolist(), strict=True))


def test_routed_topk_merges_each_shard_into_its_rows_like_a_full_merge():
    """ListRouter.merge_topk (one (n, k) result, each shard's hits merged into its rows)
    equals merging every shard's hits scattered to the batch's shape at once, ties and
    missing hits included."""
    from diffrep.index.vectors import merge_topk
    from diffrep.search.lists import ListRouter, ShardJob

    rng = np.random.default_rng(0)
    n, k, shards = 50, 5, 4
    jobs, results, full = [], [], []
    for s in range(shards):
        rows = np.sort(rng.choice(n, size=rng.integers(1, n), replace=False))
        # as faiss returns them: sorted by similarity, fewer than k hits padded with -1 at
        # the end (similarity -FLT_MAX); shards 0 and 2 with ties, 1 and 3 without
        values = rng.choice([0.2, 0.5, 0.9], size=(len(rows), k)) if s % 2 == 0 else rng.random((len(rows), k))
        sims = -np.sort(-values.astype(np.float32), axis=1)
        ids = rng.integers(s * 1000, s * 1000 + 1000, size=(len(rows), k))
        missing = np.arange(k) >= rng.integers(0, k + 1, size=(len(rows), 1))
        ids[missing], sims[missing] = -1, np.finfo(np.float32).min
        jobs.append(ShardJob(s, rows, np.zeros((len(rows), 1), np.float32), rows[:, None], sims))
        results.append((sims, ids))
        full_s, full_i = np.full((n, k), -np.inf, np.float32), np.full((n, k), -1, np.int64)
        full_s[rows], full_i[rows] = sims, ids
        full.append((full_s, full_i))
    got_s, got_i = ListRouter.merge_topk(n, jobs, results, k)
    want_s, want_i = merge_topk(full, k)
    assert np.array_equal(got_i, want_i) and np.array_equal(got_s, want_s)
    assert (got_i >= 0).sum() > n  # hits were merged
    # one shard: every row takes its hits as they are, as a merge would order them
    one_s, one_i = ListRouter.merge_topk(n, jobs[1:2], results[1:2], k)
    want_s, want_i = merge_topk([full[1]], k)
    assert np.array_equal(one_i, want_i) and np.array_equal(one_s, want_s)


def test_shards_in_one_process_share_one_coarse_quantizer(pq_index):
    """Every shard file carries a copy of the coarse quantizer; shards opened in one
    process (LocalShards, a shard actor's group) keep one: the same hits as shards with
    their own copies, and a group opened again (a restarted actor) shares a new one."""
    from diffrep.index.probes import centroids_view
    from diffrep.search.lists import ListRouter
    from diffrep.search.ray_shards import ShardGroup
    from diffrep.search.shards import ShardSearcher

    root, x = pq_index
    handle = open_index(root, MODEL)
    key, names = handle.manifest["key"], handle.shard_files()
    address = lambda s: centroids_view(s.ivf.quantizer).__array_interface__["data"][0]  # noqa: E731
    local = LocalShards(handle)
    assert local.quantizer.index is not None and len({address(s) for s in local.shards}) == 1
    own = [ShardSearcher(handle.shard_url(n), key) for n in names]
    assert len({address(s) for s in own}) == len(names)  # opened alone: a copy each
    jobs = ListRouter.of(handle).plan(x[::9], 8)
    group = ShardGroup([handle.shard_url(n) for n in names], names, key, None, None)
    for _ in range(2):  # opened, then opened again
        assert group.open() == len(x)
        assert len({address(s) for s in group.shards}) == 1
        calls = [(j.shard, j.queries, j.lists, j.coarse) for j in jobs]
        for j, (sims, ids), mine in zip(jobs, group.each("search_lists", 10, calls),
                                        local._each(jobs, "search_lists", 10), strict=True):
            want_s, want_i = own[j.shard].search_lists(j.queries, 10, j.lists, j.coarse)
            np.testing.assert_array_equal(ids, want_i)
            np.testing.assert_array_equal(mine[1], want_i)
            np.testing.assert_allclose(sims, want_s, rtol=1e-6)


def test_a_window_searched_shard_by_shard_finds_what_each_batch_finds_in_fewer_calls(pq_index):
    """A window of batches (Searcher.search(batch=...), the search job's path): each shard
    called with full batches of the window's queries that probe its lists, merged per
    query: the same top-k, approximate and exactly re-ranked, as searching each batch on
    its own, in fewer shard calls than batch by batch."""
    root, x = pq_index
    handle = open_index(root, MODEL)
    q = x[::7][:1000]
    batch = 100
    by_batch, window = Searcher(handle, LocalShards(handle), nprobe=8), Searcher(handle, LocalShards(handle), nprobe=8)
    for rerank in ("none", "exact"):
        want = [by_batch.search(q[s:s + batch], 5, rerank=rerank, candidates=40) for s in range(0, len(q), batch)]
        got = window.search(q, 5, rerank=rerank, candidates=40, batch=batch)
        np.testing.assert_array_equal(got.ids, np.concatenate([w.ids for w in want]))
        np.testing.assert_allclose(got.sims, np.concatenate([w.sims for w in want]), rtol=1e-5)
    assert (got.ids[:, 0] == np.arange(0, 7000, 7)).mean() > 0.99  # exact re-rank finds each vector itself
    calls, per_batch = window.backend.stats, by_batch.backend.stats
    assert calls.queries == per_batch.queries == 2 * len(q)
    assert calls.query_shard_pairs == per_batch.query_shard_pairs  # each (query, owner) once either way
    # at most ceil(pairs of a shard / batch) per shard, each carrying a full batch but the last
    assert calls.shard_calls <= calls.query_shard_pairs / batch + 2 * 4 < per_batch.shard_calls
    assert set(window.backend.times.as_dict()) >= {"assign", "shards", "merge", "rerank"}


def test_the_search_jobs_window_is_a_batch_per_shard_within_its_memory(pq_index):
    from diffrep.search.config import SearchConfig
    from diffrep.search.run import window_batches, windows

    root, _ = pq_index
    handle = open_index(root, MODEL)
    cfg = SearchConfig(root=root, queries=root, batch_size=100, candidates=100, nprobe=4)
    per_query = 8 * DIM + 16 * 100 + 72 * 4  # bytes a windowed query holds
    assert window_batches(cfg, Searcher(handle, LocalShards(handle), nprobe=4)) == 4  # one batch per shard
    tight = dataclasses.replace(cfg, window_mb=2)  # three windows in flight
    assert window_batches(tight, Searcher(handle, LocalShards(handle), nprobe=4)) == (2 << 20) // (3 * per_query * 100) == 3
    assert window_batches(dataclasses.replace(cfg, window_mb=0), Searcher(handle, LocalShards(handle), nprobe=4)) == 1
    assert window_batches(cfg, Searcher(handle, LocalShards(handle, route=False), nprobe=4)) == 1  # a fan-out: no window
    assert [len(w) for w in windows(iter(range(10)), 4)] == [4, 4, 2]


def test_search_ahead_writes_windows_in_order_and_raises_a_failed_search(pq_index):
    """The next window's assignment and shard calls run in two more threads: windows are
    still written in order with their own hits, each query is assigned once, and an error
    in either thread reaches the job."""
    from diffrep.search.config import SearchConfig
    from diffrep.search.queries import QueryBatch
    from diffrep.search.run import search_ahead

    root, x = pq_index
    handle = open_index(root, MODEL)
    searcher = Searcher(handle, LocalShards(handle), nprobe=8)
    cfg = SearchConfig(root=root, queries=root, k=3, candidates=20, batch_size=50)
    batches = [QueryBatch([str(i) for i in range(s, s + 50)], x[s:s + 50]) for s in range(0, 600, 50)]
    written = []
    search_ahead(searcher, cfg, iter([batches[i:i + 3] for i in range(0, 12, 3)]),
                 lambda window, hits: written.append((window[0].keys[0], hits.ids[:, 0])))
    assert [w[0] for w in written] == ["0", "150", "300", "450"]
    top1 = np.concatenate([w[1] for w in written])
    assert (top1 == np.arange(600)).mean() > 0.99  # each vector finds itself, in its window's rows
    assert searcher.backend.stats.quantizer_searches == 600  # assigned ahead, not again

    def broken(*args, **kwargs):
        raise RuntimeError("shard call failed")

    for stage in ("assign", "candidates"):
        failing = Searcher(handle, LocalShards(handle), nprobe=8)
        setattr(failing, stage, broken)
        written.clear()
        with pytest.raises(RuntimeError, match="shard call failed"):
            search_ahead(failing, cfg, iter([batches[:3], batches[3:6]]), lambda w, h: written.append(w))
        assert written == []


@pytest.mark.ray
def test_ray_shard_actors_route_like_the_local_backend(pq_index, ray_cluster):
    root, x = pq_index
    handle = open_index(root, MODEL)
    backend = RayShards(handle, num_cpus=0.25)
    try:
        q = x[::40]
        ray_hits = Searcher(handle, backend, nprobe=4).search(q, 5)
        local_hits = Searcher(handle, LocalShards(handle), nprobe=4).search(q, 5)
        np.testing.assert_array_equal(ray_hits.ids, local_hits.ids)
        assert backend.stats.shard_calls < 4 * backend.stats.batches or len(q) > 4
        # a window streamed to the actors (two calls in flight each) merges to the same top-k
        window = Searcher(handle, backend, nprobe=4).search(q, 5, rerank="exact", candidates=20, batch=16)
        want = Searcher(handle, LocalShards(handle), nprobe=4).search(q, 5, rerank="exact", candidates=20)
        np.testing.assert_array_equal(window.ids, want.ids)
        np.testing.assert_allclose(window.sims, want.sims, rtol=1e-5)
    finally:
        backend.close()


def test_shard_groups_are_consecutive_runs_covering_every_shard():
    from diffrep.search.ray_shards import actor_count, shard_groups

    assert shard_groups(10, actor_count(10, 5)) == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    assert shard_groups(7, actor_count(7, 3)) == [[0, 1, 2], [3, 4], [5, 6]]
    assert shard_groups(2, 5) == [[0], [1]] and actor_count(3, 1) == 3
    for n, g in [(1, 1), (5, 2), (64, 3), (9, 9)]:
        groups = shard_groups(n, actor_count(n, g))
        assert [s for run in groups for s in run] == list(range(n))
        assert max(map(len, groups)) <= g


def test_auto_shard_actors_fit_the_cpus(tmp_path, caplog):
    """shards_per_actor 0 (auto): ceil(shards / the cluster's whole CPUs); shard_actor_threads
    0 (auto): the CPUs the actors leave, at most a node's (one shard at 1M on 2 CPUs: one
    actor, which searched on one core while the other waited in the 1M x 512-d rehearsal).
    A number given is kept; without shard actors each is 1; auto is logged with its reason;
    < 0 refused."""
    from types import SimpleNamespace

    from diffrep.dedup.config import validate
    from diffrep.resources import Cluster, Node
    from diffrep.search.actors import (
        resolve_shard_actor_threads,
        resolve_shards_per_actor,
        shard_actor_threads_for,
        shards_per_actor_for,
    )
    from diffrep.search.ray_shards import actor_count

    laptop, cluster = Cluster((Node(2.0),)), Cluster(tuple(Node(16.0) for _ in range(8)))
    assert shards_per_actor_for(0, 10, laptop) == 5 and actor_count(10, 5) == 2
    assert shards_per_actor_for(0, 3, laptop) == 2 and actor_count(3, 2) == 2
    assert shards_per_actor_for(0, 64, cluster) == 1  # LAION-2B's 64 shards on 8 x 16 CPUs
    assert shards_per_actor_for(0, 1, Cluster((Node(0.5),))) == 1
    assert shards_per_actor_for(3, 10, cluster) == 3
    assert [shard_actor_threads_for(0, actors, laptop) for actors in (1, 2, 5)] == [2, 1, 1]
    assert shard_actor_threads_for(0, 1, cluster) == 16  # not 128: an actor runs on one node
    assert shard_actor_threads_for(0, 64, cluster) == 2
    assert shard_actor_threads_for(3, 1, laptop) == 3
    for shards, key, resolve, auto, line in [
            (10, "shards_per_actor", resolve_shards_per_actor, 5,
             "dedup.shards_per_actor auto: 5 (10 index shards, 2 actors for 2 CPUs)"),
            (1, "shard_actor_threads", resolve_shard_actor_threads, 2,
             "dedup.shard_actor_threads auto: 2 (1 shard actor(s) for 2 CPUs)")]:
        handle = SimpleNamespace(shard_files=lambda n=shards: [f"s{i}" for i in range(n)])
        cfg = DedupConfig(root=str(tmp_path), shards_per_actor=0 if key == "shards_per_actor" else 1)
        with caplog.at_level("INFO", logger="diffrep"):
            assert getattr(resolve(cfg, "dedup", handle, True, laptop), key) == auto
        assert line in caplog.text
        assert getattr(resolve(cfg, "dedup", handle, False, laptop), key) == 1
        with pytest.raises(ConfigError, match=f"dedup.{key} must be >= 0"):
            validate(DedupConfig(root=str(tmp_path), **{key: -1}))


@pytest.mark.ray
@pytest.mark.parametrize("shards_per_actor", [2, 3])
def test_actors_holding_several_shards_route_and_fan_out_like_the_local_backend(pq_index, ray_cluster,
                                                                                shards_per_actor):
    """Fewer actors than shards: the same top-k and range hits as one process holding every
    shard, routed (one call per actor per batch) and fanned out (every shard's results)."""
    root, x = pq_index
    handle = open_index(root, MODEL)
    shards = len(handle.shard_files())
    q = x[::40]
    local = Searcher(handle, LocalShards(handle, route=False), nprobe=4)
    want, want_range = local.search(q, 5), local.range_search(q, 0.9, margin=0.1)
    for route in (True, False):
        backend = RayShards(handle, num_cpus=0.25, shards_per_actor=shards_per_actor, route=route)
        try:
            assert len(backend.actors) == -(-shards // shards_per_actor) < shards
            assert backend.num_shards() == shards
            searcher = Searcher(handle, backend, nprobe=4)
            hits, found = searcher.search(q, 5), searcher.range_search(q, 0.9, margin=0.1)
            np.testing.assert_array_equal(hits.ids, want.ids)
            np.testing.assert_allclose(hits.sims, want.sims, rtol=1e-5)
            np.testing.assert_array_equal(found.query, want_range.query)
            np.testing.assert_array_equal(found.ids, want_range.ids)
            tasks = RayShards.from_actors(backend.actors, handle, route=route)  # as a task rebuilds it
            np.testing.assert_array_equal(Searcher(handle, tasks, nprobe=4).search(q, 5).ids, want.ids)
        finally:
            backend.close()


def test_incremental_add_routes_new_vectors_to_their_lists_owners(tmp_path):
    x = clustered_vectors(6000, DIM, clusters=30, seed=4)
    root = str(tmp_path)
    write_embeddings(root, MODEL, x[:4000], 1000)
    cfg = IndexConfig(root=root, model=MODEL, index_key="IVF32,PQ8x8np", exact_below=0, num_shards=3,
                      eval_queries=50)
    build(cfg, LocalExecutor())
    before = {s["shard"]: (s["first_list"], s["last_list"]) for s in open_index(root, MODEL).manifest["shards"]}
    write_embeddings(root, MODEL, x[4000:], 1000, first_shard=4)
    build(IndexConfig(**{**cfg.__dict__, "add": True}), LocalExecutor())
    handle = open_index(root, MODEL)
    assert handle.ntotal == 6000 and handle.manifest["generation"] == 1
    assert {s["shard"]: (s["first_list"], s["last_list"]) for s in handle.manifest["shards"]} == before
    routed = Searcher(handle, LocalShards(handle), nprobe=32)  # every list: exhaustive over PQ codes
    fanned = Searcher(handle, LocalShards(handle, route=False), nprobe=32)
    q = x[3900:4100]
    a = routed.search(q, 5, rerank="exact", candidates=20)
    np.testing.assert_array_equal(a.ids, fanned.search(q, 5, rerank="exact", candidates=20).ids)
    np.testing.assert_array_equal(a.ids[:, 0], np.arange(3900, 4100))


def test_an_index_built_before_list_partitioning_still_searches_and_refuses_adds(pq_index, tmp_path):
    root, x = pq_index
    old = str(tmp_path / "old")
    shutil.copytree(root, old)
    layout = IndexLayout(old, MODEL)
    with open(layout.manifest) as f:
        manifest = json.load(f)
    del manifest["partition"]
    for s in manifest["shards"]:
        del s["first_list"], s["last_list"]
    manifest["files"] = describe_files(layout.base, sorted(manifest["files"]))
    with open(layout.manifest, "w") as f:
        json.dump(manifest, f)
    handle = open_index(old, MODEL)
    backend = LocalShards(handle)
    assert backend.router is None  # fans out, as before
    q = x[:50]
    np.testing.assert_array_equal(Searcher(handle, backend, nprobe=4).search(q, 5).ids,
                                  Searcher(open_index(root, MODEL), nprobe=4).search(q, 5).ids)
    write_embeddings(old, MODEL, x[:500], 500, first_shard=50)
    with pytest.raises(ConfigError, match="--overwrite true"):
        build(IndexConfig(root=old, model=MODEL, add=True), LocalExecutor())


def planted_pairs(n: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Vectors with planted groups of 2-5 near-copies, spread over the corpus, their
    similarities spread across 0.89-0.999 so that many pairs lie just below and just above
    a 0.95 threshold (a shifted pair threshold changes the pairs); returns (vectors, group
    of each row or -1)."""
    rng = np.random.default_rng(seed)
    x = clustered_vectors(n, dim, clusters=50, seed=seed)
    group = np.full(n, -1)
    rows = rng.permutation(n)
    pos, g = 0, 0
    while pos < n // 4:
        size = int(rng.integers(2, 6))
        members = rows[pos:pos + size]
        for m in members[1:]:
            scale = rng.uniform(0.05, 0.5)
            v = x[members[0]] + scale * rng.standard_normal(dim).astype(np.float32) / np.sqrt(dim)
            x[m] = v / np.linalg.norm(v)
        group[members] = g
        pos, g = pos + size, g + 1
    return x, group


@pytest.mark.ray
def test_dedup_on_ivfpq_shards_against_exact_pairs(tmp_path, ray_cluster, capsys):
    """Dedup through routed shard actors on a compressed index finds the exact pairs above
    the threshold (IndexFlatIP range search): recall >= 0.99, and precision 1 (the exact
    re-rank keeps only true similarities above the threshold)."""
    x, _ = planted_pairs(12000, DIM, seed=5)
    root = str(tmp_path)
    write_embeddings(root, MODEL, x, 2000, dtype="float16")
    build(IndexConfig(root=root, model=MODEL, index_key="IVF64_HNSW32,PQ8x8np", exact_below=0,
                      num_shards=3, eval_queries=100), LocalExecutor())
    handle = open_index(root, MODEL)
    stored = handle.vectors(np.arange(len(x)))
    flat = faiss.IndexFlatIP(DIM)
    flat.add(stored)
    lims, sims, ids = flat.range_search(stored, 0.95)
    qs = np.repeat(np.arange(len(x)), np.diff(lims).astype(np.int64))
    truth = {(int(a), int(b)) for a, b in zip(qs, ids, strict=True) if a < b}
    assert len(truth) > 2000

    backend = RayShards(handle, num_cpus=0.25, shards_per_actor=2)  # 2 actors: [0, 1], [2]
    try:
        run_dedup(DedupConfig(root=root, model=MODEL, threshold=0.95, margin=0.2, nprobe=16,
                              partition_ids=5000), handle, RayExecutor(num_cpus=0.5), backend.actors)
    finally:
        backend.close()
    pairs = pq.read_table(tmp_path / "dedup" / MODEL / "pairs", columns=["id_a", "id_b"])
    found = set(zip(pairs["id_a"].to_pylist(), pairs["id_b"].to_pylist(), strict=True))
    recall = len(found & truth) / len(truth)
    assert recall >= 0.99, recall
    assert found <= truth
    summary = json.loads((tmp_path / "dedup" / MODEL / "summary.json").read_text())
    # nprobe 16 is more than the add recorded (diffrep.index.probes): the quantizer's probes
    assert summary["routing"]["quantizer_searches_per_query"] == 1.0
    assert summary["routing"]["shards_per_query"] <= 8

    # a slice reports its own progress (a 500k-query slice searches for minutes): here
    # after every shard call, ending at all of its calls and (query, shard) probes
    from diffrep.dedup.pairs import dedup_slice

    spec = handle.slices[0]
    capsys.readouterr()
    marker = dedup_slice(root, MODEL, spec.slice_id, threshold=0.95, margin=0.2, query_batch=500,
                         partition_ids=5000, nprobe=1, progress_interval_s=0)
    batches = -(-spec.count // 500)
    routing = marker["routing"]
    calls = routing["shard_calls"]
    lines = [ln for ln in capsys.readouterr().out.splitlines() if f"dedup slice {spec.slice_id}:" in ln]
    assert len(lines) == calls > 1, lines
    pairs = routing["query_shard_pairs"]  # nprobe 1: one list per query, two owners where a cut splits it
    assert f"shard calls {calls}/{calls} (100%) | {pairs} query probes" in lines[-1], lines[-1]
    # at nprobe 1 the probes the add recorded serve (no quantizer search), and the slice
    # is searched shard by shard: calls are the batches of each shard's queries (at most
    # one part-filled call per shard), where batches in id order ask every shard
    from diffrep.search.lists import ListRouter

    router = ListRouter.of(handle)
    in_id_order = sum(len(router.plan(handle.vectors(np.arange(s, min(s + 500, spec.id_start + spec.count))), 1))
                      for s in range(spec.id_start, spec.id_start + spec.count, 500))
    assert routing["batches"] == batches and routing["quantizer_searches_per_query"] == 0.0
    assert spec.count <= pairs < 1.1 * spec.count
    assert in_id_order == 3 * batches and calls <= -(-pairs // 500) + 3 - 1, (routing, in_id_order)
