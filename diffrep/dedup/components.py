"""Connected components of the duplicate graph by star contraction, partitioned.

The alternating large-star / small-star algorithm (Kiveris et al., "Connected Components
in MapReduce and Beyond", SoCC 2014). Each step looks at one node's neighbourhood only,
so it runs per partition of nodes: a task holds the directed edges (u, v) of the nodes u
in its id range (every undirected edge is stored at both ends) and emits new undirected
edges, which the caller routes to both ends' partitions for the next step.

- large-star: every neighbour v > u of u is re-attached to m(u) = min(u, neighbours of u);
- small-star: u and its neighbours v <= u are attached to their minimum.

Both keep the components. At a fixed point of both (no change in a large and the
following small step) every component is a star around its smallest id: the group id.
Rounds grow as log^2 of the longest chain; near-duplicate groups converge in a few.

Before the first round each partition contracts its own edges (local_stars): the
components of the edges it holds, each emitted as a star around its smallest id. That
keeps the components (every edge lies inside one local component, and every local
component is connected) and cuts what the rounds move from every pair (a group of m
images has m(m-1)/2) to at most one edge per node a partition sees.
Memory per task: the edges of its partition's nodes (a group's root partition holds the
group's members, so the largest group bounds it; never the corpus).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

EMPTY = np.zeros(0, np.int64)


def packed(u: np.ndarray, v: np.ndarray) -> np.ndarray | None:
    """(u, v) as one uint64 key (u in the high half) that sorts as (u, v) does; None when
    an id does not fit 32 bits (over 4.29 billion images)."""
    if len(u) and (min(u.min(), v.min()) < 0 or max(u.max(), v.max()) >= 2**32):
        return None
    return (u.astype(np.uint64) << np.uint64(32)) | v.astype(np.uint64)


def unpacked(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (key >> np.uint64(32)).astype(np.int64), (key & np.uint64(0xFFFFFFFF)).astype(np.int64)


def unique_edges(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Directed edges sorted by (u, v), each once. Sorts one packed key when ids fit 32
    bits (half the memory and time of a two-key sort)."""
    key = packed(u, v)
    if key is not None:
        return unpacked(np.unique(key))
    order = np.lexsort((v, u))
    u, v = u[order], v[order]
    first = np.r_[True, (u[1:] != u[:-1]) | (v[1:] != v[:-1])] if len(u) else np.zeros(0, bool)
    return u[first], v[first]


def _sorted_unique(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Directed edges without self-loops or repeats, sorted by (u, v)."""
    u, v = np.asarray(u, np.int64), np.asarray(v, np.int64)
    keep = u != v
    u, v = u[keep], v[keep]
    key = packed(u, v)
    if key is not None and (len(key) < 2 or bool((key[1:] > key[:-1]).all())):
        return u, v  # already sorted and unique
    return unique_edges(u, v)


def _segment_first(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For u sorted: the start of each run of equal values, and each row's run index."""
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]]) if len(u) else EMPTY
    run = np.cumsum(np.r_[False, u[1:] != u[:-1]]) if len(u) else EMPTY
    return starts, run


def large_star(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Undirected edges (a, b), a > b, after a large-star step over nodes u (all of each
    u's edges given), and the number of edges that changed."""
    u, v = _sorted_unique(u, v)
    if not len(u):
        return EMPTY, EMPTY, 0
    starts, run = _segment_first(u)
    m = np.minimum(u[starts], v[starts])[run]   # v sorted within u: first v is the smallest
    up = v > u
    a, b = v[up], m[up]
    return a, b, int((b != u[up]).sum())


def small_star(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Undirected edges (a, b), a > b, after a small-star step over nodes u, and the
    number of nodes whose edges changed (those with two or more smaller neighbours)."""
    u, v = _sorted_unique(u, v)
    down = v < u
    u, v = u[down], v[down]
    if not len(u):
        return EMPTY, EMPTY, 0
    starts, run = _segment_first(u)
    m = v[starts][run]                          # the smallest of u's smaller neighbours
    sizes = np.diff(np.r_[starts, len(u)])
    others = v != m                             # smaller neighbours other than the minimum
    a = np.concatenate([u[starts], v[others]])
    b = np.concatenate([v[starts], m[others]])
    return a, b, int((sizes >= 2).sum())


def local_stars(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Undirected edges (a, b), a > b: every node of the edges (u, v) attached to the
    smallest id of its connected component in this edge set (scipy's
    connected_components), and the number of edges emitted. Fastest with u ascending
    (once_per_pair's order: the graph's rows are then u's runs, no sort). Memory: the
    edges' local CSR graph (int32 node numbers, as float64 in scipy), ~20 bytes per edge."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    u, v = np.asarray(u, np.int64), np.asarray(v, np.int64)
    if not len(u):
        return EMPTY, EMPTY, 0
    if not bool((u[1:] >= u[:-1]).all()):
        order = np.argsort(u, kind="stable")
        u, v = u[order], v[order]
    starts, _ = _segment_first(u)
    heads = u[starts]
    # hash-based (pyarrow): 3x numpy's sort-based unique and searchsorted on 22M edges
    nodes = np.sort(pc.unique(pa.array(np.concatenate([heads, v]))).to_numpy())
    per_node = np.zeros(len(nodes), np.int64)
    per_node[np.searchsorted(nodes, heads)] = np.diff(np.r_[starts, len(u)])
    column = pc.index_in(pa.array(v), value_set=pa.array(nodes)).to_numpy().astype(np.int32)
    graph = csr_matrix((np.ones(len(u), bool), column, np.r_[0, np.cumsum(per_node)]),
                       shape=(len(nodes), len(nodes)))
    _, label = connected_components(graph, directed=False)
    del graph
    _, first = np.unique(label, return_index=True)  # nodes ascend: a label's first is its minimum
    smallest = nodes[first][label]
    attached = nodes != smallest
    return nodes[attached], smallest[attached], int(attached.sum())


def star_roots(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """At the fixed point: (nodes, group id = min(node, its neighbours)) for nodes u."""
    u, v = _sorted_unique(u, v)
    if not len(u):
        return EMPTY, EMPTY
    starts, _ = _segment_first(u)
    nodes = u[starts]
    return nodes, np.minimum(nodes, v[starts])
