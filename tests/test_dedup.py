"""Dedup: planted duplicate groups in synthetic vectors (groups must not depend on how the
work is sliced or sharded), and the demo corpus with the distilled SSCD (real weights), through the job, with
its report rendered in headless Chromium."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from diffrep.dedup.config import DedupConfig
from diffrep.dedup.run import run_dedup
from diffrep.executor import LocalExecutor
from diffrep.index.builder import build
from diffrep.index.config import IndexConfig
from diffrep.routing import num_partitions
from diffrep.search import Searcher, open_index
from diffrep.synthetic import clustered_vectors, write_embeddings
from tests.conftest import DEMO_MODEL
from tests.helpers import need_chromium, render_report

MODEL = DEMO_MODEL


def planted(n: int = 3000, dim: int = 64, seed: int = 0):
    """Vectors with planted groups: group g has 2..6 near-copies (similarity > 0.99) of one
    base vector, spread over the whole corpus order. Returns (vectors, true group of each
    row or -1)."""
    rng = np.random.default_rng(seed)
    x = clustered_vectors(n, dim, clusters=40, seed=seed)
    truth = np.full(n, -1)
    rows = rng.permutation(n)
    pos, g = 0, 0
    while pos < 600:
        size = int(rng.integers(2, 7))
        members = rows[pos:pos + size]
        base = x[members[0]]
        for m in members[1:]:
            v = base + 0.01 * rng.standard_normal(dim).astype(np.float32)
            x[m] = v / np.linalg.norm(v)
        truth[members] = g
        pos, g = pos + size, g + 1
    return x, truth


def partition(groups_table) -> set[frozenset]:
    by: dict[int, set] = {}
    for key, gid in zip(groups_table["key"].to_pylist(), groups_table["group_id"].to_pylist(), strict=True):
        by.setdefault(gid, set()).add(key)
    return {frozenset(v) for v in by.values()}


def star_components(a: np.ndarray, b: np.ndarray, parts: int, span: int, first: str = "local_stars") -> dict[int, int]:
    """Run the star steps as the job does (`first` over each partition's edges, then
    small- and large-star rounds), with edges routed to `parts` id ranges of `span` ids;
    returns node -> group id."""
    from diffrep.dedup import components

    def route(a, b):
        u, v = np.concatenate([a, b]), np.concatenate([b, a])
        return [(u[u // span == p], v[u // span == p]) for p in range(parts)]

    inbound = route(a, b)
    outs = [getattr(components, first)(u, v) for u, v in inbound]
    history = [sum(o[2] for o in outs)]
    step = 0
    while not (len(history) >= 2 and history[-1] == 0 and history[-2] == 0):
        step += 1
        routed = route(np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs]))
        fn = components.small_star if step % 2 else components.large_star
        outs = [fn(u, v) for u, v in routed]
        history.append(sum(o[2] for o in outs))
    final = route(np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs]))
    out = {}
    for u, v in final:
        nodes, roots = components.star_roots(u, v)
        out.update(zip(nodes.tolist(), roots.tolist(), strict=True))
    return out


@pytest.mark.parametrize("first", ["local_stars", "large_star"])
@pytest.mark.parametrize("seed,parts", [(0, 1), (1, 3), (2, 7)])
def test_star_contraction_equals_connected_components(seed, parts, first):
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    rng = np.random.default_rng(seed)
    n = 600
    a, b = rng.integers(0, n, 450), rng.integers(0, n, 450)
    # a long chain and a large star: the shapes that need the most rounds
    chain = rng.permutation(n)[:80]
    a, b = np.concatenate([a, chain[:-1], np.full(60, 599)]), np.concatenate([b, chain[1:], rng.integers(0, n, 60)])
    got = star_components(a, b, parts, -(-n // parts), first)
    _, labels = connected_components(coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n)), directed=False)
    touched = np.unique(np.concatenate([a[a != b], b[a != b]]))
    assert set(got) == set(touched.tolist())
    for node in touched:  # same components, and the group id is the component's smallest id
        members = np.flatnonzero(labels == labels[node])
        assert got[int(node)] == int(members.min())


def test_local_stars_move_one_edge_per_node_not_every_pair():
    """A group of m images holds m(m-1)/2 pairs; the rounds get m-1 edges from it (each
    member attached to the smallest id), and a partition's nodes outside its id range
    (hits of its queries) are contracted with them."""
    from diffrep.dedup import components

    m = 50
    clique = np.array([(i, j) for i in range(100, 100 + m) for j in range(100, 100 + m) if i != j])
    u = np.concatenate([clique[:, 0], [7, 9000]])
    v = np.concatenate([clique[:, 1], [9000, 120]])   # 7 - 9000 - 120 joins 7 to the clique
    a, b, emitted = components.local_stars(u, v)
    assert emitted == len(a) == m + 1
    assert set(b.tolist()) == {7} and sorted(a.tolist()) == [*range(100, 100 + m), 9000]
    assert components.local_stars(np.zeros(0, np.int64), np.zeros(0, np.int64))[2] == 0


@pytest.mark.parametrize("rows_per_slice,shards,partition_ids", [(3000, 1, 10_000), (250, 3, 700), (500, 2, 128)])
def test_groups_do_not_depend_on_slices_shards_or_partitions(tmp_path, rows_per_slice, shards, partition_ids):
    x, truth = planted()
    root = str(tmp_path)
    write_embeddings(root, MODEL, x, 250)
    build(IndexConfig(root=root, model=MODEL, num_shards=shards, rows_per_slice=rows_per_slice,
                      eval_queries=50), LocalExecutor())
    handle = open_index(root, MODEL)
    summary = run_dedup(DedupConfig(root=root, model=MODEL, threshold=0.95, partition_ids=partition_ids),
                        handle, LocalExecutor(), None)
    groups = pq.read_table(tmp_path / "dedup" / MODEL / "groups")
    keys = [f"k{r // 250:05d}_{r % 250}" for r in range(len(x))]
    want = {}
    for key, g in zip(keys, truth, strict=True):
        if g >= 0:
            want.setdefault(g, set()).add(key)
    assert partition(groups) == {frozenset(v) for v in want.values()}
    assert summary["groups"] == len(want) and summary["duplicated_images"] == int((truth >= 0).sum())
    from diffrep.dedup.assemble import COUNT_EDGES, SIZE_EDGES, histogram

    # bins in their numeric order (the report plots them so), counts over every image
    assert list(summary["duplicate_count_histogram"]) == list(histogram(np.zeros(0), COUNT_EDGES))
    assert list(summary["group_size_histogram"]) == list(histogram(np.zeros(0), SIZE_EDGES))
    assert sum(summary["duplicate_count_histogram"].values()) == len(x)
    # every within-group pair, once (over all slices' files); duplicate counts = size - 1
    pairs = pq.read_table(tmp_path / "dedup" / MODEL / "pairs")
    assert pairs.num_rows == sum(len(v) * (len(v) - 1) // 2 for v in want.values())
    assert min(pairs["similarity"].to_pylist()) > 0.95
    assert len({(a, b) for a, b in zip(pairs["key_a"].to_pylist(), pairs["key_b"].to_pylist(), strict=True)}) \
        == pairs.num_rows
    g = groups.to_pylist()
    assert all(r["duplicate_count"] == r["group_size"] - 1 for r in g)
    assert sum(r["is_representative"] for r in g) == len(want)
    # each group (and its stats) whole in the part that group_part_of names
    from diffrep.dedup.layout import group_part_of

    parts = num_partitions(len(x), json.loads((tmp_path / "dedup" / MODEL / "plan.json").read_text())["partition_ids"])
    for dataset in ("groups", "group_stats"):
        files = sorted((tmp_path / "dedup" / MODEL / dataset).glob("part_*.parquet"))
        assert len(files) == parts
        for f in files:
            gids = pq.read_table(f)["group_id"].to_numpy()
            assert (group_part_of(gids, parts) == int(f.stem.split("_")[1])).all()


def test_group_parts_spread_groups_whose_ids_crowd_the_first_ids_and_old_outputs_are_refused(tmp_path):
    """A group's id is its smallest member's: in a corpus whose groups spread over the id
    range, a group of k members has its id in the first 1/P of ids with probability
    1 - (1 - 1/P)^k, so the large groups' ids crowd the first range partition. Parts by a
    hash of the id hold as many groups as each other, whatever the ids. A dedup output
    partitioned the old way (by range) is refused by the reader, naming the way out."""
    from diffrep.config import ConfigError
    from diffrep.dedup.layout import group_part_of
    from diffrep.dedup.read import DedupGroups

    rng = np.random.default_rng(0)
    n, parts = 6_000_000, 60
    sizes = rng.integers(2, 200, 20_000)
    gids = np.array([rng.integers(0, n, s).min() for s in sizes])
    members_by_range = np.bincount(gids // (n // parts), weights=sizes, minlength=parts)
    members_by_hash = np.bincount(group_part_of(gids, parts), weights=sizes, minlength=parts)
    assert members_by_range.max() > 10 * members_by_range.mean()  # the skew range routing had
    assert members_by_hash.max() < 1.3 * members_by_hash.mean()
    assert (group_part_of(gids, parts) == group_part_of(gids.copy(), parts)).all()

    x, _ = planted()
    root = str(tmp_path)
    write_embeddings(root, MODEL, x, 250)
    build(IndexConfig(root=root, model=MODEL, num_shards=1, rows_per_slice=3000, eval_queries=50),
          LocalExecutor())
    run_dedup(DedupConfig(root=root, model=MODEL, threshold=0.95), open_index(root, MODEL), LocalExecutor(), None)
    plan_url = tmp_path / "dedup" / MODEL / "plan.json"
    plan = json.loads(plan_url.read_text())
    DedupGroups(str(tmp_path / "dedup" / MODEL))
    del plan["group_partitioning"]
    plan_url.write_text(json.dumps(plan))
    with pytest.raises(ConfigError, match="earlier diffrep.*dedup.overwrite: true"):
        DedupGroups(str(tmp_path / "dedup" / MODEL))


def test_demo_dedup_job_finds_planted_duplicates(demo_sscd_root, tmp_path):
    from jobs import dedup

    root, corpus, _ = demo_sscd_root
    root = str(root)
    build(IndexConfig(root=root, model=MODEL, num_shards=2, eval_queries=20), LocalExecutor())
    assert dedup.main(["--root", root, "--model", MODEL, "--threshold", "0.6",
                       "--shard_actor_cpus", "0.5", "--overwrite", "true"]) == 0
    base = f"{root}/dedup/{MODEL}"
    pairs = pq.read_table(f"{base}/pairs").to_pylist()
    found = {frozenset((p["key_a"], p["key_b"])) for p in pairs}
    truth = {frozenset((d["key"], d["source_key"]))
             for d in pq.read_table(corpus / "duplicates.parquet").to_pylist()}
    # pairs among copies of one source are true duplicates as well
    sources: dict[str, set] = {}
    for d in pq.read_table(corpus / "duplicates.parquet").to_pylist():
        sources.setdefault(d["source_key"], {d["source_key"]}).add(d["key"])
    same_source = {frozenset((a, b)) for s in sources.values() for a in s for b in s if a < b}
    recall = len(found & truth) / len(truth)
    precision = len(found & same_source) / max(len(found), 1)
    assert recall >= 0.9 and precision >= 0.95, (recall, precision)
    groups = pq.read_table(f"{base}/groups").to_pylist()
    group_of = {g["key"]: g["group_id"] for g in groups}
    for members in sources.values():  # distinct photos are never grouped together
        ids = {group_of.get(k) for k in members} - {None}
        assert len(ids) <= 1
    need_chromium()
    rendered = render_report(f"{base}/report.html", tmp_path)
    assert rendered["images"] >= 4 and rendered["images_ok"] == rendered["images"]
    assert rendered["svgs"] == 3 and "Largest groups" in rendered["dom"]


def test_pairs_exactly_once_whichever_side_of_an_ivfpq_index_finds_them(tmp_path):
    """With IVF-PQ (nprobe 2, PQ distances, no margin to speak of) many pairs are found by
    one end's search only; each must be in pairs/ exactly once, and duplicate counts are
    degrees in the union of both sides' results."""
    rng = np.random.default_rng(0)
    x = clustered_vectors(3000, 32, clusters=20, seed=0)
    for i in range(0, 1200, 2):  # pairs at graded similarities around the threshold
        v = x[i] + rng.uniform(0.05, 0.4) * rng.standard_normal(32).astype(np.float32) / np.sqrt(32) * 2
        x[i + 1] = v / np.linalg.norm(v)
    root = str(tmp_path)
    write_embeddings(root, MODEL, x, 500)
    build(IndexConfig(root=root, model=MODEL, index_key="IVF16,PQ8x8", exact_below=0, eval_queries=50),
          LocalExecutor())
    handle = open_index(root, MODEL)
    found = Searcher(handle, nprobe=2).range_search(handle.vectors(np.arange(len(x))), 0.9,
                                                    margin=0.02, exact=True)
    directed = {(a, b) for a, b in zip(found.query.tolist(), found.ids.tolist(), strict=True) if a != b}
    only_larger_side = {(b, a) for a, b in directed if a > b and (b, a) not in directed}
    assert len(only_larger_side) >= 10  # the case a smaller-id-writes rule loses
    union = {(min(a, b), max(a, b)) for a, b in directed}

    run_dedup(DedupConfig(root=root, model=MODEL, threshold=0.9, margin=0.02, nprobe=2,
                          partition_ids=700), handle, LocalExecutor(), None)
    pairs = pq.read_table(tmp_path / "dedup" / MODEL / "pairs")
    got = list(zip(pairs["id_a"].to_pylist(), pairs["id_b"].to_pylist(), strict=True))
    assert len(got) == len(set(got)) and all(a < b for a, b in got)
    assert set(got) == union and only_larger_side <= set(got)
    keys = handle.lookup(np.array([a for a, _ in got]))["key"].to_pylist()
    assert keys == pairs["key_a"].to_pylist()
    degree: dict[int, int] = {}
    for a, b in union:
        degree[a], degree[b] = degree.get(a, 0) + 1, degree.get(b, 0) + 1
    groups = pq.read_table(tmp_path / "dedup" / MODEL / "groups")
    assert dict(zip(groups["id"].to_pylist(), groups["duplicate_count"].to_pylist(), strict=True)) == degree
    components = pq.read_table(tmp_path / "dedup" / MODEL / "components")
    assert dict(zip(components["id"].to_pylist(), components["group_id"].to_pylist(), strict=True)) == \
        dict(zip(groups["id"].to_pylist(), groups["group_id"].to_pylist(), strict=True))


def test_group_stats_vectorised_equals_a_plain_count():
    import pyarrow as pa

    from diffrep.dedup.assemble import GROUP_SCHEMA, group_stats

    rows = [  # group 3: two members share a caption up to case and spaces; group 7: all distinct
        ("a", 3, 3, "A  Red Car"), ("b", 5, 3, "a red car"), ("c", 9, 3, "a boat"),
        ("d", 7, 7, "x"), ("e", 8, 7, None), ("f", 11, 7, "y")]
    t = pa.table({"key": [r[0] for r in rows], "id": [r[1] for r in rows], "group_id": [r[2] for r in rows],
                  "group_size": [3] * 6, "is_representative": [r[1] == r[2] for r in rows],
                  "duplicate_count": [2] * 6, "url": [f"u{r[1]}" for r in rows],
                  "caption": [r[3] for r in rows]}, schema=GROUP_SCHEMA)
    stats = {r["group_id"]: r for r in group_stats(t.sort_by([("group_id", "ascending"), ("id", "ascending")])).to_pylist()}
    assert stats[3]["representative_key"] == "a" and stats[7]["representative_key"] == "d"
    assert stats[3]["distinct_captions"] == 2 and stats[7]["distinct_captions"] == 3
    assert abs(stats[3]["shared_caption_share"] - 2 / 3) < 1e-6 and stats[7]["shared_caption_share"] == 0
    assert stats[3]["example_urls"] == ["u3", "u5", "u9"] and stats[3]["size"] == 3


class KilledAfter(LocalExecutor):
    """A LocalExecutor that dies (as a killed driver would) after `calls` task calls."""

    def __init__(self, calls: int):
        self.left = calls

    def map(self, fn, items, shared=None, progress=None, count=None):
        def once(*args, **kwargs):
            if self.left == 0:
                raise KeyboardInterrupt("killed")
            self.left -= 1
            return fn(*args, **kwargs)
        return LocalExecutor().map(once, items, shared=shared)


def test_partitions_give_every_worker_one_and_a_resume_keeps_them(tmp_path):
    """The end stage splits finer than partition_ids when that leaves workers idle (a 1M
    index on 2 CPUs ran its end stage as one task); a run resumed on another cluster keeps
    the partitioning its finished tasks used. The shard actors are released once the
    search is over, before the end stage."""
    from diffrep.dedup.run import partition_span

    assert partition_span(1_000_000, 10_000_000, workers=2) == 500_000
    assert partition_span(10_000_000, 1_000_000, workers=2) == 1_000_000
    assert partition_span(5, 10, workers=16) == 1

    class WideKilled(KilledAfter):
        def workers(self) -> int:
            return 4

    x, truth = planted()
    root = str(tmp_path)
    write_embeddings(root, MODEL, x, 250)
    build(IndexConfig(root=root, model=MODEL, rows_per_slice=1000, eval_queries=50), LocalExecutor())
    handle = open_index(root, MODEL)
    base = tmp_path / "dedup" / MODEL
    released = []

    def release() -> None:
        released.append(sorted(p.parent.name for p in (base / "work").glob("*/part_*.json")))

    cfg = DedupConfig(root=root, model=MODEL, threshold=0.95)
    with pytest.raises(KeyboardInterrupt):
        run_dedup(cfg, handle, WideKilled(len(handle.slices) + 1), None, release_actors=release)
    assert released == [[]]  # after the search, before any end-stage task
    summary = run_dedup(cfg, handle, LocalExecutor(), None)
    span = -(-len(x) // 4)
    plan = json.loads((base / "plan.json").read_text())
    assert plan["partition_ids"] == span and plan["max_partition_ids"] == cfg.partition_ids
    assert summary["partitions"] == 4 and len(list((base / "components").glob("*.parquet"))) == 4
    assert summary["duplicated_images"] == int((truth >= 0).sum())
    assert summary["groups"] == len(set(truth[truth >= 0].tolist()))


@pytest.mark.parametrize("killed_after", [2, 9, 15])
def test_killed_dedup_resumes_to_the_same_outputs(tmp_path, killed_after):
    from diffrep.dedup.read import DedupGroups

    x, _ = planted()
    tables = {}
    for name, kill in (("clean", None), ("killed", killed_after)):
        root = str(tmp_path / name)
        write_embeddings(root, MODEL, x, 250)
        build(IndexConfig(root=root, model=MODEL, num_shards=2, rows_per_slice=500, eval_queries=50),
              LocalExecutor())
        handle = open_index(root, MODEL)
        cfg = DedupConfig(root=root, model=MODEL, threshold=0.95, partition_ids=700)
        if kill is not None:
            with pytest.raises(KeyboardInterrupt):
                run_dedup(cfg, handle, KilledAfter(kill), None)
            assert not (tmp_path / name / "dedup" / MODEL / "summary.json").exists()
        summary = run_dedup(cfg, handle, LocalExecutor(), None)
        base = tmp_path / name / "dedup" / MODEL
        tables[name] = {d: pq.read_table(base / d).sort_by([(c, "ascending") for c in cols])
                        for d, cols in (("pairs", ["id_a", "id_b"]), ("groups", ["id"]),
                                        ("components", ["id"]), ("group_stats", ["group_id"]))}
        tables[name]["summary"] = {k: v for k, v in summary.items() if k != "seconds"}
        assert not (base / "work").exists()
    for d in ("pairs", "groups", "components", "group_stats"):
        assert tables["killed"][d].equals(tables["clean"][d]), d
    assert tables["killed"]["summary"] == tables["clean"]["summary"]
    # the partition readers agree with the datasets
    groups = tables["clean"]["groups"]
    reader = DedupGroups(str(tmp_path / "clean" / "dedup" / MODEL))
    ids = groups["id"].to_numpy()[::7]
    group_of = reader.group_ids(np.concatenate([ids, [len(x) - 1, 0]]))
    want = dict(zip(groups["id"].to_pylist(), groups["group_id"].to_pylist(), strict=True))
    assert group_of == {i: want[i] for i in np.concatenate([ids, [len(x) - 1, 0]]).tolist() if i in want}
    members = reader.members(np.array(sorted(set(group_of.values()))))
    for gid, ms in members.items():
        assert ms == sorted(i for i, g in want.items() if g == gid)
    # README's query: DuckDB reads the part folders as one table
    import duckdb

    stats_glob = str(tmp_path / "clean" / "dedup" / MODEL / "group_stats" / "*.parquet")
    top = duckdb.sql(f"select group_id, size from '{stats_glob}' order by size desc, group_id "
                     f"limit 3").fetchall()
    clean_stats = tables["clean"]["group_stats"].to_pylist()
    want_top = sorted(((r["group_id"], r["size"]) for r in clean_stats), key=lambda t: (-t[1], t[0]))
    assert top == want_top[:3]


@pytest.mark.parametrize("offset", [0, 2**33])
def test_each_pair_once_with_its_largest_similarity_and_star_steps_past_32_bit_ids(offset):
    from diffrep.dedup import components
    from diffrep.dedup.partition_steps import once_per_pair

    src = np.array([5, 3, 5, 3, 9, 5], np.int64) + offset
    dst = np.array([3, 5, 3, 9, 3, 3], np.int64) + offset
    sim = np.array([0.96, 0.97, 0.99, 0.98, 0.98, 0.97], np.float32)
    import pyarrow as pa

    from diffrep.dedup.pairs import EDGE_SCHEMA

    s, d, best = once_per_pair(pa.table({"src": src, "dst": dst, "similarity": sim}, schema=EDGE_SCHEMA))
    assert (s - offset).tolist() == [3, 3, 5, 9] and (d - offset).tolist() == [5, 9, 3, 3]
    assert best.tolist() == pytest.approx([0.97, 0.98, 0.99, 0.98])
    a, b, _ = components.large_star(np.r_[s, d], np.r_[d, s])  # 3 is the root of 3, 5, 9
    assert sorted(zip((a - offset).tolist(), (b - offset).tolist(), strict=True)) == [(5, 3), (9, 3)]


def test_a_star_step_reads_each_routed_edge_once_however_many_files_repeat_it(tmp_path):
    """Every partition that saw a member of a group routes that member's edge to the
    group's root partition: the root partition gets the same edge from many files. The
    step reads them file by file, keeping each edge once (also past 32-bit ids, where no
    packed key exists), sorted, equal to the set of all rows routed to it."""
    from diffrep.dedup.partition_steps import CC_SCHEMA, _route_edges, inbound_edges
    from diffrep.routing import read_inbound

    rng = np.random.default_rng(0)
    for big in (False, True):
        urls = []
        for p in range(7):  # more rows than ids: every edge arrives many times
            u, v = rng.integers(0, 300, 5000), rng.integers(0, 30, 5000)
            if big and p == 3:
                u = u + 2**33
            urls.append(str(tmp_path / f"{big}-{p}.parquet"))
            _route_edges(urls[-1], u, v, 100)
        for part in (0, 2) + ((2**33 // 100,) if big else ()):
            u, v = inbound_edges(urls, part)
            rows = read_inbound(urls, part, CC_SCHEMA)
            want = sorted(set(zip(rows["u"].to_pylist(), rows["v"].to_pylist(), strict=True)))
            assert len(rows) > 2 * len(want) or part > 2
            assert list(zip(u.tolist(), v.tolist(), strict=True)) == want


def test_dedup_refuses_to_resume_with_other_settings(tmp_path):
    """A killed dedup resumed with another threshold would mix pairs of two thresholds:
    refused, naming what changed and the way out; overwrite starts again."""
    from diffrep.config import ConfigError

    x, _ = planted()
    root = str(tmp_path)
    write_embeddings(root, MODEL, x, 250)
    build(IndexConfig(root=root, model=MODEL, num_shards=1, rows_per_slice=500, eval_queries=50),
          LocalExecutor())
    handle = open_index(root, MODEL)
    with pytest.raises(KeyboardInterrupt):
        run_dedup(DedupConfig(root=root, model=MODEL, threshold=0.95), handle, KilledAfter(2), None)
    with pytest.raises(ConfigError, match=r"\(threshold differ.*dedup.overwrite: true"):
        run_dedup(DedupConfig(root=root, model=MODEL, threshold=0.9), handle, LocalExecutor(), None)
    summary = run_dedup(DedupConfig(root=root, model=MODEL, threshold=0.9, overwrite=True), handle,
                        LocalExecutor(), None)
    assert summary["threshold"] == 0.9 and summary["pairs"] > 0
