"""The partitioned end of the dedup job: tasks that each hold one id range.

  adjacency (per id partition)  the partition's edges from every query slice, each pair
                                once (the larger similarity when both sides found it);
                                duplicate counts; half-pairs routed to id_b's partition;
                                the partition's own components as stars
                                (components.local_stars), the rounds' first edges
  pairs (per id partition)      half-pairs + id_b's key -> pairs/part_P.parquet
  cc (per id partition, rounds) star contraction steps (diffrep.dedup.components)
  labels (per id partition)     group id of each node -> components/part_P.parquet; member
                                rows (with metadata) routed to group_part_of(group id)
  groups (per group partition)  groups/part_P.parquet, group_stats/part_P.parquet and the
                                partition's summary (diffrep.dedup.assemble)

Every task writes its outputs, then its marker last (the content it returns), so a
killed job redoes only unfinished tasks. Memory per task: the rows of one partition
(bounded by `partition_ids` and by the largest group), never the corpus.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from diffrep import storage
from diffrep.dedup import components
from diffrep.dedup.assemble import MEMBER_SCHEMA, assemble_partition
from diffrep.dedup.layout import DedupLayout, group_part_of
from diffrep.dedup.pairs import EDGE_SCHEMA
from diffrep.routing import partition_of, read_inbound, write_routed
from diffrep.search.index import IndexHandle, open_index

HALF_PAIR_SCHEMA = pa.schema([("id_a", pa.int64()), ("id_b", pa.int64()), ("similarity", pa.float32()),
                              ("key_a", pa.string())])
PAIR_SCHEMA = pa.schema([("key_a", pa.string()), ("key_b", pa.string()), ("similarity", pa.float32()),
                         ("id_a", pa.int64()), ("id_b", pa.int64())])
CC_SCHEMA = pa.schema([("u", pa.int64()), ("v", pa.int64())])
DEGREE_SCHEMA = pa.schema([("id", pa.int64()), ("duplicate_count", pa.int32())])
COMPONENT_SCHEMA = pa.schema([("id", pa.int64()), ("group_id", pa.int64())])


def id_metadata(handle: IndexHandle, ids: np.ndarray, columns: list[str]) -> pa.Table:
    """id map `columns` of `ids`, in that order. Reads only the id-map row groups that
    hold them (a partition's id range: a run of row groups of one or two slices)."""
    return handle.lookup(ids, columns=columns)


def once_per_pair(edges: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Directed edges (EDGE_SCHEMA) sorted by (src, dst), each once with its largest
    similarity (a pair found by both ends' searches arrives twice). Frees the table as
    soon as its columns are read (pass it without keeping a reference)."""
    src, dst = edges["src"].to_numpy(), edges["dst"].to_numpy()
    sim = edges["similarity"].to_numpy()
    del edges
    pa.default_memory_pool().release_unused()
    key = components.packed(src, dst)
    if key is None:
        order = np.lexsort((dst, src))
        src, dst = src[order], dst[order]
        first = np.r_[True, (src[1:] != src[:-1]) | (dst[1:] != dst[:-1])] if len(src) else np.zeros(0, bool)
        src, dst = src[first], dst[first]
    else:
        del src, dst
        order = np.argsort(key)  # equal keys end up adjacent, in any order: max is taken
        key = key[order]
        first = np.r_[True, key[1:] != key[:-1]] if len(key) else np.zeros(0, bool)
        src, dst = components.unpacked(key[first])
        del key
    starts = np.flatnonzero(first)
    best = np.maximum.reduceat(sim[order], starts) if len(starts) else sim[:0]
    return src, dst, best


def _route_edges(url: str, a: np.ndarray, b: np.ndarray, partition_ids: int) -> None:
    """Undirected edges (a, b) -> directed at both ends, routed to u's partition."""
    u, v = np.concatenate([a, b]), np.concatenate([b, a])
    write_routed(url, pa.table({"u": u, "v": v}, schema=CC_SCHEMA), partition_of(u, partition_ids))


def _finish(layout: DedupLayout, step: str, partition: int, marker: dict) -> dict:
    storage.write_json(layout.step_done(step, partition), marker)
    return marker


def adjacency_step(root: str, model: str, partition: int, slice_ids: list[int],
                   partition_ids: int) -> dict:
    layout = DedupLayout(root, model)
    handle = open_index(root, model, verify_files=False)
    src, dst, sim = once_per_pair(read_inbound([layout.slice_edges(s) for s in slice_ids],
                                               partition, EDGE_SCHEMA))

    starts = np.flatnonzero(np.r_[True, src[1:] != src[:-1]]) if len(src) else np.zeros(0, np.int64)
    nodes, degree = src[starts], np.diff(np.r_[starts, len(src)])  # src is sorted
    storage.write_parquet(layout.step_output("degree", partition), pa.table(
        {"id": nodes, "duplicate_count": degree.astype(np.int32)}, schema=DEGREE_SCHEMA))
    keys = id_metadata(handle, nodes, ["key"])["key"]
    mine = src < dst
    key_a = pc.take(keys, pa.array(np.searchsorted(nodes, src[mine])))
    write_routed(layout.step_output("halfpairs", partition), pa.table(
        {"id_a": src[mine], "id_b": dst[mine], "similarity": sim[mine], "key_a": key_a},
        schema=HALF_PAIR_SCHEMA), partition_of(dst[mine], partition_ids))
    del key_a, sim
    a, b, changes = components.local_stars(src, dst)
    _route_edges(layout.step_output("cc0", partition), a, b, partition_ids)
    return _finish(layout, "adjacency", partition, {
        "partition": partition, "nodes": int(len(nodes)), "pairs_in": int(mine.sum()),
        "changes": changes})


def pairs_step(root: str, model: str, partition: int, num_parts: int) -> dict:
    layout = DedupLayout(root, model)
    handle = open_index(root, model, verify_files=False)
    half = read_inbound([layout.step_output("halfpairs", p) for p in range(num_parts)], partition,
                        HALF_PAIR_SCHEMA)
    # each adjacency partition wrote its half-pairs sorted, and partitions are id ranges
    # read in order: sorted already, unless written otherwise
    id_a, id_b = half["id_a"].to_numpy(), half["id_b"].to_numpy()
    if not bool(((id_a[1:] > id_a[:-1]) | ((id_a[1:] == id_a[:-1]) & (id_b[1:] > id_b[:-1]))).all()):
        half = half.sort_by([("id_a", "ascending"), ("id_b", "ascending")])
        id_b = half["id_b"].to_numpy()
    ends = np.sort(pc.unique(pa.array(id_b)).to_numpy())  # hash-based: 3x np.unique's sort
    key_b = pc.take(id_metadata(handle, ends, ["key"])["key"], pc.index_in(pa.array(id_b), value_set=pa.array(ends)))
    storage.write_parquet(layout.part("pairs", partition), pa.table(
        {"key_a": half["key_a"], "key_b": key_b, "similarity": half["similarity"],
         "id_a": half["id_a"], "id_b": half["id_b"]}, schema=PAIR_SCHEMA))
    return _finish(layout, "pairs", partition, {"partition": partition, "pairs": len(half)})


def inbound_edges(urls: list[str], partition: int) -> tuple[np.ndarray, np.ndarray]:
    """The directed edges (u, v) routed to `partition` by the files at `urls`, each once,
    sorted by (u, v); read file by file and merged as they come. The same edge arrives
    from many files: every partition that saw a member of a group emits that member's edge
    to the group's root (components.local_stars), and all of them go to the root's
    partition, so a group of k members spread over P partitions sends its root's
    partition up to k x P copies. Memory: the partition's distinct edges plus one file's
    rows (concatenating first held every copy: 5.9 GB in one task at 30M vectors)."""
    keys = np.zeros(0, np.uint64)
    pending: list[np.ndarray] = []  # merged into keys once they hold as many as keys does
    rows = []  # ids over 32 bits: no packed key, concatenated and sorted at the end
    for url in urls:
        t = read_inbound([url], partition, CC_SCHEMA)
        u, v = t["u"].to_numpy(), t["v"].to_numpy()
        del t
        key = components.packed(u, v)
        if key is None or rows:
            rows.append((u, v))
        elif len(key):
            pending.append(np.unique(key))
            if sum(len(k) for k in pending) >= max(len(keys), 1 << 20):
                keys = np.unique(np.concatenate([keys, *pending]))
                pending = []
    if pending:
        keys = np.unique(np.concatenate([keys, *pending]))
    if rows:
        if len(keys):
            rows.append(components.unpacked(keys))
        return components.unique_edges(np.concatenate([r[0] for r in rows]),
                                       np.concatenate([r[1] for r in rows]))
    return components.unpacked(keys)


def cc_step(root: str, model: str, partition: int, step: int, num_parts: int,
            partition_ids: int) -> dict:
    """Star step `step` (odd: small-star, even: large-star) over the previous step's
    edges routed to `partition`."""
    layout = DedupLayout(root, model)
    u, v = inbound_edges([layout.step_output(f"cc{step - 1}", p) for p in range(num_parts)], partition)
    fn = components.small_star if step % 2 else components.large_star
    a, b, changes = fn(u, v)
    _route_edges(layout.step_output(f"cc{step}", partition), a, b, partition_ids)
    return _finish(layout, f"cc{step}", partition, {"partition": partition, "changes": changes,
                                                     "edges": int(len(a))})


def labels_step(root: str, model: str, partition: int, last_step: int, num_parts: int) -> dict:
    layout = DedupLayout(root, model)
    handle = open_index(root, model, verify_files=False)
    nodes, group_ids = components.star_roots(*inbound_edges(
        [layout.step_output(f"cc{last_step}", p) for p in range(num_parts)], partition))
    storage.write_parquet(layout.part("components", partition), pa.table(
        {"id": nodes, "group_id": group_ids}, schema=COMPONENT_SCHEMA))
    degree = storage.read_table(layout.step_output("degree", partition))
    counts = np.zeros(len(nodes), np.int32)
    if len(degree):
        counts[np.searchsorted(nodes, degree["id"].to_numpy())] = degree["duplicate_count"].to_numpy()
    meta = id_metadata(handle, nodes, ["key", "url", "caption"])
    members = pa.table({"id": nodes, "group_id": group_ids, "duplicate_count": counts,
                        "key": meta["key"], "url": meta["url"], "caption": meta["caption"]},
                       schema=MEMBER_SCHEMA)
    write_routed(layout.step_output("members", partition), members, group_part_of(group_ids, num_parts))
    return _finish(layout, "labels", partition, {"partition": partition, "nodes": int(len(nodes))})


def groups_step(root: str, model: str, partition: int, num_parts: int, report_groups: int) -> dict:
    layout = DedupLayout(root, model)
    members = read_inbound([layout.step_output("members", p) for p in range(num_parts)], partition,
                           MEMBER_SCHEMA)
    summary = assemble_partition(layout, partition, members, report_groups)
    return _finish(layout, "groups", partition, summary)
