"""Turning slice outputs into the dedup job's tables: duplicate counts, groups with
representatives, caption multiplicity per group, and the summary."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from diffrep import storage
from diffrep.dedup.components import read_forest
from diffrep.dedup.layout import DedupLayout
from diffrep.search.index import IndexHandle

EXAMPLE_URLS = 5


def normalise_caption(caption: str | None) -> str:
    return " ".join((caption or "").lower().split())


def histogram(values: np.ndarray, edges: list[int]) -> dict[str, int]:
    """Counts of integer values in [edges[i], edges[i+1]) labelled 'lo' or 'lo-hi'; the
    last bin is open ('lo+')."""
    out = {}
    for i, lo in enumerate(edges):
        hi = edges[i + 1] if i + 1 < len(edges) else None
        mask = values >= lo if hi is None else (values >= lo) & (values < hi)
        label = f"{lo}+" if hi is None else (str(lo) if hi == lo + 1 else f"{lo}-{hi - 1}")
        out[label] = int(mask.sum())
    return out


COUNT_EDGES = [0, 1, 2, 3, 4, 5, 10, 20, 50, 100, 1000]


def assemble(layout: DedupLayout, handle: IndexHandle, slice_ids: list[int], final_forest: str,
             threshold: float) -> dict:
    """Write groups.parquet and group_stats.parquet; return the summary. Holds the
    duplicated images only (never the pairs): O(images in groups) memory."""
    nodes, roots = read_forest(final_forest)
    counts = pa.concat_tables([pq.read_table(layout.slice_counts(s)) for s in slice_ids])
    dup_count = np.zeros(len(nodes), np.int64)
    if counts.num_rows:
        dup_count[np.searchsorted(nodes, counts["id"].to_numpy())] = counts["duplicate_count"].to_numpy()
    group_ids, group_index, sizes = np.unique(roots, return_inverse=True, return_counts=True)
    meta = handle.lookup(nodes)
    groups = pa.table({
        "key": meta["key"], "id": pa.array(nodes, pa.int64()), "group_id": pa.array(roots, pa.int64()),
        "group_size": pa.array(sizes[group_index], pa.int32()),
        "is_representative": pa.array(nodes == roots), "duplicate_count": pa.array(dup_count, pa.int32()),
        "url": meta["url"], "caption": meta["caption"]})
    storage.write_parquet(layout.path("groups.parquet"), groups)

    stats = group_stats(groups)
    storage.write_parquet(layout.path("group_stats.parquet"), stats)
    all_counts = np.concatenate([dup_count, np.zeros(handle.ntotal - len(nodes), np.int64)])
    pairs = sum(storage.read_json(layout.slice_done(s))["pairs"] for s in slice_ids)
    return {
        "model": handle.model, "threshold": threshold, "images": handle.ntotal,
        "pairs": int(pairs), "duplicated_images": int(len(nodes)), "groups": int(len(group_ids)),
        "removable_images": int(len(nodes) - len(group_ids)),
        "kept_images": int(handle.ntotal - len(nodes) + len(group_ids)),
        "largest_group": int(sizes.max()) if len(sizes) else 0,
        "duplicate_count_histogram": histogram(all_counts, COUNT_EDGES),
        "group_size_histogram": histogram(sizes, [2, 3, 4, 5, 10, 20, 50, 100, 1000]),
        "distinct_captions_histogram": histogram(stats["distinct_captions"].to_numpy(),
                                                 [1, 2, 3, 4, 5, 10, 20, 100]),
        "groups_sharing_a_caption": int(pc.sum(pc.greater(stats["shared_caption_share"], 0)).as_py() or 0),
    }


def group_stats(groups: pa.Table) -> pa.Table:
    """Per group: size, representative key, distinct (normalised) captions, share of
    members whose caption another member also has, example urls; largest first."""
    rows: dict[int, dict] = {}
    for key, gid, url, caption, rep in zip(groups["key"].to_pylist(), groups["group_id"].to_pylist(),
                                           groups["url"].to_pylist(), groups["caption"].to_pylist(),
                                           groups["is_representative"].to_pylist(), strict=True):
        g = rows.setdefault(gid, {"captions": [], "urls": [], "rep": None})
        g["captions"].append(normalise_caption(caption))
        if len(g["urls"]) < EXAMPLE_URLS:
            g["urls"].append(url)
        if rep:
            g["rep"] = key
    out = {"group_id": [], "size": [], "representative_key": [], "distinct_captions": [],
           "shared_caption_share": [], "example_urls": []}
    for gid, g in rows.items():
        captions = g["captions"]
        counts: dict[str, int] = {}
        for c in captions:
            counts[c] = counts.get(c, 0) + 1
        out["group_id"].append(gid)
        out["size"].append(len(captions))
        out["representative_key"].append(g["rep"])
        out["distinct_captions"].append(len(counts))
        out["shared_caption_share"].append(sum(1 for c in captions if counts[c] > 1) / len(captions))
        out["example_urls"].append(g["urls"])
    table = pa.table(out, schema=pa.schema([
        ("group_id", pa.int64()), ("size", pa.int32()), ("representative_key", pa.string()),
        ("distinct_captions", pa.int32()), ("shared_caption_share", pa.float32()),
        ("example_urls", pa.list_(pa.string()))]))
    return table.sort_by([("size", "descending"), ("group_id", "ascending")])
