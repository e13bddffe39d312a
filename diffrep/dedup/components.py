"""Connected components of the duplicate graph, merged in rounds.

Each query slice reduces its own pairs to a forest: (node, root) for every node it
touches, root = the smallest id of the node's component within those pairs. Forests are
merged `fan_in` at a time (a Ray task each) until one is left; a merge needs memory for
the nodes of its inputs only (never the pairs: a group of m copies has m^2/2 pairs but
m forest entries). Components are those of the union graph whatever the slicing, and a
root is always its component's smallest id, so group ids do not depend on the slicing.
"""

from __future__ import annotations

import io

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from diffrep import storage


def forest(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Components of the graph with edges a[i]-b[i]: (nodes sorted, root of each node)."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    nodes, inv = np.unique(np.concatenate([a, b]), return_inverse=True)
    if not len(nodes):
        return nodes, nodes.copy()
    n = len(nodes)
    graph = coo_matrix((np.ones(len(a), np.int8), (inv[:len(a)], inv[len(a):])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    roots = np.full(labels.max() + 1, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(roots, labels, nodes)
    return nodes, roots[labels]


def merge_forests(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Union of forests: each (node, root) entry is an edge of the union graph."""
    if not parts:
        empty = np.zeros(0, np.int64)
        return empty, empty
    return forest(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


def write_forest(url: str, nodes: np.ndarray, roots: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, nodes=nodes, roots=roots)
    storage.write_bytes(url, buf.getvalue())


def read_forest(url: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(io.BytesIO(storage.read_bytes(url)), allow_pickle=False) as z:
        return z["nodes"], z["roots"]


def merge_forest_files(inputs: list[str], output: str) -> dict:
    """One merge task: read `inputs`, write their union forest to `output`."""
    nodes, roots = merge_forests([read_forest(u) for u in inputs])
    write_forest(output, nodes, roots)
    return {"output": output, "nodes": int(len(nodes))}
