"""Training a large IVF's coarse centroids in two levels, the sample partitioned by cell
instead of held by one process.

One k-means over the whole training sample (`train_points_per_centroid` x nlist vectors)
holds that sample in one task: 1.17M x 64-d (300 MB) at 30M vectors, 16.8M x 512-d
(34 GB) for LAION-2B's 2^18 lists, and costs sample x nlist, i.e. nlist^2. Here:

1. `train_level1` (one task): k1 = ceil(sqrt(nlist)) centroids on an even subsample of at
   most LEVEL1_POINTS x k1 vectors (2^18 lists: 512 x 256 x 512-d, 268 MB); a key's
   pre-transforms (OPQ) are trained there too, on the same subsample.
2. `split_run` (a task per run of RUN_BYTES of the sample): each vector through the
   pre-transforms and to its nearest level-1 centroid; the run is written sorted by cell,
   raw float32, with each cell's row count. The sample is now on disk, partitioned.
3. nlist is split among the cells by their sizes (faiss's two-level rebalance).
4. `train_cells` (a task per group of whole cells, about CELL_BYTES each): each cell's rows
   read from every run (ranged reads) and clustered into its share of the lists, with the
   IVF's own clustering parameters. A cell holds about points_per_centroid x sqrt(nlist)
   vectors (2^18 lists at 39: 20k x 512-d, 40 MB).
   Then REFINE_ROUNDS rounds of refinement: `resplit_run` re-sorts each run by the cell of
   each row's nearest list (an HNSW over every centroid, `assigner_task`), and the cells
   are clustered again from their centroids: cells become the unions of their lists'
   Voronoi regions, which halves the imbalance that cell borders add (docs/scaling.md).
5. `finish` (one task): the nlist centroids added to the empty IVF's quantizer (faiss then
   skips its own k-means) and the codes (PQ) trained on a bounded sample (CODE_POINTS).

So no task holds more than a bounded part of the sample (LEVEL1_POINTS x k1,
RUN_BYTES, CELL_BYTES or CODE_POINTS vectors' worth) plus, in refinement and in the
driver, the centroids themselves (nlist x dim float32: what every search router holds
anyway, ~0.5 GB at 2^18 x 512-d); the k-means cost is sample x (k1 + nlist / k1) per
iteration instead of sample x nlist. The runs (the sample, on disk) are removed when
training is done.
"""

from __future__ import annotations

import math

import faiss
import numpy as np

from diffrep import storage
from diffrep.index.build import gather
from diffrep.index.coarse import COARSE_NPROBE, apply_transforms, calibrate_ef, pre_transforms
from diffrep.index.locality import renumber_lists
from diffrep.index.plan import locate
from diffrep.progress import Progress

LEVEL1_POINTS = 256  # level-1 training vectors per centroid (faiss's max_points_per_centroid)
RUN_BYTES = 64 << 20  # sample rows per split task, as float32 bytes
CELL_BYTES = 128 << 20  # cell rows per clustering task, as float32 bytes (a larger cell: alone)
REFINE_ROUNDS = 1  # rounds of re-splitting by the nearest list's cell and clustering again
CODE_POINTS = 131072  # vectors the codes (PQ) and the quantizer's efSearch are trained on


def level1_lists(nlist: int) -> int:
    """Level-1 centroids for `nlist` lists: ceil(sqrt(nlist))."""
    return max(1, math.ceil(math.sqrt(nlist)))


def task_bytes(nlist: int, dim: int) -> int:
    """About the most memory one training task holds, bytes: its largest part of the
    sample (the level-1 subsample, a run, a cell group or the code sample) and a copy,
    and the refinement's HNSW over the centroids."""
    rows = max(LEVEL1_POINTS * level1_lists(nlist), CODE_POINTS)
    assigner = nlist * (dim * 4 + 2 * 32 * 4)  # refinement's HNSW over every centroid
    return 2 * max(rows * dim * 4, RUN_BYTES, CELL_BYTES) + assigner


def even_subset(count: int, size: int) -> np.ndarray:
    """`size` indices spread evenly over range(count) (all of them when size >= count): of
    a random sample's sorted positions, a random subsample."""
    if size >= count:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, size).astype(np.int64))


def _ivf(index: faiss.Index) -> faiss.IndexIVF:
    return faiss.extract_index_ivf(index)


def _assign_metric(ivf: faiss.IndexIVF) -> int:
    """The metric faiss's own IVF training assigns by: L2 when the quantizer is trained
    apart and filled after (quantizer_trains_alone 2: an HNSW quantizer), else the IVF's.
    Assigning k-means by inner product to unnormalised means favours the tightest
    clusters' centroids and unbalances the lists (measured: imbalance 3.7 at 10M vectors,
    against 1.1-1.6 for faiss's one k-means)."""
    alone = ivf.quantizer_trains_alone
    return faiss.METRIC_L2 if (ord(alone) if isinstance(alone, str) else int(alone)) == 2 else ivf.metric_type


def clustering_of(key: str, dim: int) -> dict:
    """How faiss's own training of `key` clusters: {"niter", "spherical" (centroids
    normalised: the inner-product IVFs), "metric" (of the assignment)}. Read from a new
    index: a deserialized one carries default parameters (not spherical), and per-cell
    k-means with unnormalised centroids left 288 of 10,000 lists empty (imbalance 3.7)."""
    ivf = _ivf(faiss.index_factory(dim, key, faiss.METRIC_INNER_PRODUCT))
    return {"niter": int(ivf.cp.niter), "spherical": bool(ivf.cp.spherical), "metric": _assign_metric(ivf)}


def _cluster(x: np.ndarray, k: int, clustering: dict, seed: int, init: np.ndarray | None = None) -> np.ndarray:
    """(k, d) float32 centroids of `x` by faiss's k-means as `clustering` (clustering_of)
    says, from `init` (k, d) when given; fewer rows than k: `init`, or the rows repeated."""
    d = x.shape[1]
    if len(x) <= k:
        return np.ascontiguousarray(init if init is not None else np.resize(x, (k, d)), np.float32)
    params = faiss.ClusteringParameters()
    params.niter, params.spherical, params.seed = clustering["niter"], clustering["spherical"], seed
    params.max_points_per_centroid = max(params.max_points_per_centroid, math.ceil(len(x) / k))
    params.verbose = False
    params.min_points_per_centroid = 1  # a cell's share of the sample is deliberate: no warning per cell
    clus = faiss.Clustering(d, int(k), params)
    if init is not None:
        faiss.copy_array_to_vector(np.ascontiguousarray(init, np.float32).ravel(), clus.centroids)
    metric = clustering["metric"]
    assign = faiss.IndexFlatIP(d) if metric == faiss.METRIC_INNER_PRODUCT else faiss.IndexFlatL2(d)
    clus.train(np.ascontiguousarray(x, np.float32), assign)
    return faiss.vector_to_array(clus.centroids).reshape(k, d)


def train_level1(key: str, sample: np.ndarray, seed: int, threads: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The empty index `key` with its pre-transforms trained on `sample` (raw vectors),
    serialized, and its IVF's k1 level-1 centroids (in the transformed space)."""
    if threads:
        faiss.omp_set_num_threads(threads)
    index = faiss.index_factory(sample.shape[1], key, faiss.METRIC_INNER_PRODUCT)
    x = np.ascontiguousarray(sample, np.float32)
    for t in pre_transforms(index):
        if not t.is_trained:
            t.train(x)
        x = np.ascontiguousarray(t.apply_py(x), np.float32)
    centroids = _cluster(x, level1_lists(_ivf(index).nlist), clustering_of(key, sample.shape[1]), seed)
    return faiss.serialize_index(index), centroids


def split_run(url: str, sample: np.ndarray, index: np.ndarray, centroids: np.ndarray, metric: int,
              threads: int = 0) -> np.ndarray:
    """Write the run `sample` (raw vectors) to `url`, through the index's pre-transforms and
    sorted by nearest level-1 centroid (raw float32 rows); returns each cell's row count."""
    if threads:
        faiss.omp_set_num_threads(threads)
    trained = faiss.deserialize_index(np.asarray(index, np.uint8))
    x = apply_transforms(pre_transforms(trained), sample)
    flat = faiss.IndexFlatIP(x.shape[1]) if metric == faiss.METRIC_INNER_PRODUCT else faiss.IndexFlatL2(x.shape[1])
    flat.add(np.ascontiguousarray(centroids, np.float32))
    _, cell = flat.search(x, 1)
    order = np.argsort(cell[:, 0], kind="stable")
    storage.write_bytes(url, np.ascontiguousarray(x[order]).tobytes())
    return np.bincount(cell[:, 0], minlength=len(centroids)).astype(np.int64)


def resplit_run(url: str, out_url: str, dim: int, assigner: np.ndarray, cell_of: np.ndarray,
                threads: int = 0) -> np.ndarray:
    """Rewrite the run at `url` (transformed rows) to `out_url`, sorted by the cell owning
    each row's nearest centroid of `assigner` (an HNSW index over every centroid, whose
    cells `cell_of` gives); returns each cell's row count. One round of refinement: the
    cells become the unions of their lists' global Voronoi regions."""
    if threads:
        faiss.omp_set_num_threads(threads)
    x = np.frombuffer(storage.read_bytes(url), np.float32).reshape(-1, dim)
    _, nearest = faiss.deserialize_index(np.asarray(assigner, np.uint8)).search(x, 1)
    cell = cell_of[nearest[:, 0]]
    order = np.argsort(cell, kind="stable")
    storage.write_bytes(out_url, np.ascontiguousarray(x[order]).tobytes())
    return np.bincount(cell, minlength=int(cell_of.max()) + 1).astype(np.int64)


def assigner_task(centroids: np.ndarray, metric: int, threads: int = 0) -> np.ndarray:
    """An HNSW index over `centroids` (efSearch 64), serialized: resplit_run's assignment."""
    if threads:
        faiss.omp_set_num_threads(threads)
    hnsw = faiss.IndexHNSWFlat(centroids.shape[1], 32, metric)
    hnsw.hnsw.efSearch = 64
    hnsw.add(np.ascontiguousarray(centroids, np.float32))
    return faiss.serialize_index(hnsw)


def lists_per_cell(counts: np.ndarray, nlist: int) -> np.ndarray:
    """nlist split among cells in proportion to their sizes (sums to nlist exactly)."""
    total = np.cumsum(counts)
    cut = total * nlist // max(int(total[-1]), 1)
    return np.diff(np.r_[0, cut]).astype(np.int64)


def cell_groups(counts: np.ndarray, dim: int, cell_bytes: int | None = None) -> list[list[int]]:
    """Consecutive cells grouped so that each group holds about `cell_bytes` (default
    CELL_BYTES) of rows."""
    cell_bytes = CELL_BYTES if cell_bytes is None else cell_bytes
    groups: list[list[int]] = [[]]
    held = 0
    for cell, rows in enumerate(counts.tolist()):
        if groups[-1] and held + rows * dim * 4 > cell_bytes:
            groups.append([])
            held = 0
        groups[-1].append(cell)
        held += rows * dim * 4
    return [g for g in groups if g]


def train_cells(cells: list[int], lists: list[int], init: np.ndarray | None, run_urls: list[str],
                run_counts: np.ndarray, dim: int, clustering: dict, seed: int, threads: int = 0) -> np.ndarray:
    """(sum(lists), dim) float32: each cell of `cells` clustered into its `lists` lists
    (`clustering`: clustering_of), from `init` (their centroids of the round before) when
    given, its rows read from every run (run_counts: (runs, k1) rows per cell; `dim`: the
    rows' dims, after any pre-transform)."""
    if threads:
        faiss.omp_set_num_threads(threads)
    starts = np.cumsum(np.c_[np.zeros(len(run_counts), np.int64), run_counts], axis=1)
    out, first = [], 0
    for cell, k in zip(cells, lists, strict=True):
        if k == 0:
            continue
        start = init[first:first + k] if init is not None else None
        first += k
        parts = [np.frombuffer(storage.read_range(url, int(starts[r, cell]) * dim * 4,
                                                  int(starts[r, cell + 1]) * dim * 4), np.float32)
                 for r, url in enumerate(run_urls)]
        rows = np.concatenate(parts).reshape(-1, dim)
        out.append(_cluster(rows, k, clustering, seed + cell, start))
    return np.concatenate(out) if out else np.zeros((0, dim), np.float32)


def finish(index: np.ndarray, centroids: np.ndarray, sample: np.ndarray, threads: int = 0,
           coarse_recall: float = 0.99) -> tuple[np.ndarray, dict]:
    """The trained index: `centroids` (nlist, transformed space) in its IVF's quantizer,
    the codes trained on `sample` (raw vectors), lists renumbered by locality and an HNSW
    quantizer's efSearch calibrated (as build.train_index does); serialized, and
    {"training_device": "cpu", "coarse_quantizer": ..., "coarse_training": "two-level"}."""
    if threads:
        faiss.omp_set_num_threads(threads)
    trained = faiss.deserialize_index(np.asarray(index, np.uint8))
    ivf = _ivf(trained)
    if len(centroids) != ivf.nlist:
        raise RuntimeError(f"two-level training made {len(centroids)} centroids for {ivf.nlist} lists")
    ivf.quantizer.add(np.ascontiguousarray(centroids, np.float32))
    trained.train(np.ascontiguousarray(sample, np.float32))  # the quantizer is full: codes only
    renumber_lists(trained)
    coarse = calibrate_ef(trained, sample, COARSE_NPROBE, coarse_recall)
    return faiss.serialize_index(trained), {"training_device": "cpu", "coarse_quantizer": coarse,
                                            "coarse_training": "two-level"}


# --- the tasks: each reads its own vectors (`located`, diffrep.index.plan.locate) --------

def level1_task(root: str, model: str, dim: int, located: list, count: int, key: str, seed: int,
                threads: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return train_level1(key, gather(root, model, located, count, dim), seed, threads)


def split_task(url: str, root: str, model: str, dim: int, located: list, count: int,
               index: np.ndarray, centroids: np.ndarray, metric: int, threads: int = 0) -> np.ndarray:
    return split_run(url, gather(root, model, located, count, dim), index, centroids, metric, threads)


def finish_task(root: str, model: str, dim: int, located: list, count: int, index: np.ndarray,
                centroids: np.ndarray, threads: int = 0, coarse_recall: float = 0.99) -> tuple[np.ndarray, dict]:
    return finish(index, centroids, gather(root, model, located, count, dim), threads, coarse_recall)


def train(executor, work_dir: str, root: str, model: str, key: str, dim: int, positions: np.ndarray,
          files: list, seed: int, threads: int = 0, coarse_recall: float = 0.99) -> tuple[np.ndarray, dict]:
    """Train the empty index `key` on the sample at global `positions` (sorted, over the
    embedding `files` in order) in two levels, each step's tasks run by `executor`; the runs
    are written under `work_dir` and removed at the end. Returns what build.train_index
    returns, with "coarse_training" and the tasks' counts in "two_level"."""
    storage.remove_tree(work_dir)
    nlist = _ivf(faiss.index_factory(dim, key, faiss.METRIC_INNER_PRODUCT)).nlist
    clustering = clustering_of(key, dim)
    k1 = level1_lists(nlist)
    first = positions[even_subset(len(positions), LEVEL1_POINTS * k1)]
    [(index, centroids)] = executor.map(level1_task, [(root, model, dim, locate(first, files), len(first))],
                                        shared={"key": key, "seed": seed, "threads": threads})
    run_rows = max(1, RUN_BYTES // (4 * dim))
    runs = [positions[i:i + run_rows] for i in range(0, len(positions), run_rows)]
    urls = [storage.join(work_dir, f"run-{i:05d}.f32") for i in range(len(runs))]
    run_counts = np.stack(executor.map(
        split_task, [(url, root, model, dim, locate(run, files), len(run)) for url, run in zip(urls, runs, strict=True)],
        shared={"index": index, "centroids": centroids, "metric": clustering["metric"], "threads": threads},
        progress=Progress("index train: split by cell", len(runs), unit="runs", item="vectors"),
        count=lambda c: int(c.sum())))
    counts = run_counts.sum(axis=0)
    lists = lists_per_cell(counts, nlist)
    cell_of = np.repeat(np.arange(len(lists)), lists)
    inner = centroids.shape[1]
    merged, largest = None, int(counts.max())
    for round_ in range(1 + REFINE_ROUNDS):
        if merged is not None:  # refinement: the runs re-sorted by their rows' nearest list's cell
            [assigner] = executor.map(assigner_task, [(merged, clustering["metric"])], shared={"threads": threads})
            moved = [storage.join(work_dir, f"run-{i:05d}.r{round_}.f32") for i in range(len(urls))]
            run_counts = np.stack(executor.map(
                resplit_run, list(zip(urls, moved, strict=True)),
                shared={"dim": inner, "assigner": assigner, "cell_of": cell_of, "threads": threads},
                progress=Progress("index train: refine", len(urls), unit="runs", item="vectors"),
                count=lambda c: int(c.sum())))
            for url in urls:
                storage.remove_tree(url)
            urls, counts = moved, run_counts.sum(axis=0)
            largest = max(largest, int(counts.max()))
        groups = cell_groups(counts, inner)
        starts = np.r_[0, np.cumsum(lists)]
        parts = executor.map(
            train_cells, [(g, lists[g].tolist(), None if merged is None else merged[starts[g[0]]:starts[g[-1] + 1]])
                          for g in groups],
            shared={"run_urls": urls, "run_counts": run_counts, "dim": inner, "clustering": clustering,
                    "seed": seed + round_, "threads": threads},
            progress=Progress(f"index train: cells, round {round_ + 1}", len(groups), unit="cell groups",
                              item="lists"),
            count=len)
        merged = np.concatenate(parts)
    code = positions[even_subset(len(positions), CODE_POINTS)]
    [(trained, info)] = executor.map(finish_task, [(root, model, dim, locate(code, files), len(code))],
                                     shared={"index": index, "centroids": merged,
                                             "threads": threads, "coarse_recall": coarse_recall})
    storage.remove_tree(work_dir)
    info["two_level"] = {"level1_lists": k1, "level1_points": len(first), "runs": len(runs),
                         "cell_tasks": len(groups), "largest_cell": largest, "refine_rounds": REFINE_ROUNDS,
                         "code_points": len(code)}
    return trained, info
