"""Group tables of one group-id partition (vectorised with pyarrow / numpy), and the job's
summary merged from the per-partition summaries.

A partition's members arrive whole (every member of a group is routed to the part of its
group id, layout.group_part_of), so group sizes, representatives and caption statistics are local to it.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from diffrep import storage
from diffrep.dedup.layout import DedupLayout

EXAMPLE_URLS = 5
GROUP_ROWS = 65536  # rows per row group of a groups part (sorted by group id)
COUNT_EDGES = [0, 1, 2, 3, 4, 5, 10, 20, 50, 100, 1000]
SIZE_EDGES = [2, 3, 4, 5, 10, 20, 50, 100, 1000]
CAPTION_EDGES = [1, 2, 3, 4, 5, 10, 20, 100]

MEMBER_SCHEMA = pa.schema([("id", pa.int64()), ("group_id", pa.int64()), ("duplicate_count", pa.int32()),
                           ("key", pa.string()), ("url", pa.string()), ("caption", pa.string())])
GROUP_SCHEMA = pa.schema([("key", pa.string()), ("id", pa.int64()), ("group_id", pa.int64()),
                          ("group_size", pa.int32()), ("is_representative", pa.bool_()),
                          ("duplicate_count", pa.int32()), ("url", pa.string()), ("caption", pa.string())])
STATS_SCHEMA = pa.schema([("group_id", pa.int64()), ("size", pa.int32()), ("representative_key", pa.string()),
                          ("distinct_captions", pa.int32()), ("shared_caption_share", pa.float32()),
                          ("example_urls", pa.list_(pa.string()))])


def normalise_captions(captions: pa.Array) -> pa.Array:
    """Lower case, whitespace runs collapsed to one space, trimmed; null -> ""."""
    text = pc.utf8_lower(pc.fill_null(captions, ""))
    return pc.utf8_trim_whitespace(pc.replace_substring_regex(text, r"\s+", " "))


def histogram(values: np.ndarray, edges: list[int]) -> dict[str, int]:
    """Counts of integer values in [edges[i], edges[i+1]) labelled 'lo' or 'lo-hi'; the
    last bin is open ('lo+')."""
    values = np.asarray(values)
    out = {}
    for i, lo in enumerate(edges):
        hi = edges[i + 1] if i + 1 < len(edges) else None
        mask = values >= lo if hi is None else (values >= lo) & (values < hi)
        label = f"{lo}+" if hi is None else (str(lo) if hi == lo + 1 else f"{lo}-{hi - 1}")
        out[label] = int(mask.sum())
    return out


def group_stats(groups: pa.Table) -> pa.Table:
    """Per group of `groups` (GROUP_SCHEMA rows sorted by group_id, id): size,
    representative key, distinct normalised captions, share of members whose caption
    another member also has, the first example urls; largest first."""
    if not len(groups):
        return STATS_SCHEMA.empty_table()
    t = pa.table({"group_id": groups["group_id"], "caption": normalise_captions(groups["caption"]),
                  "url": groups["url"]})
    per_group = t.group_by("group_id", use_threads=False).aggregate(
        [("caption", "count_distinct"), ([], "count_all"), ("url", "list")]).sort_by("group_id")
    per_caption = t.group_by(["group_id", "caption"], use_threads=False).aggregate([([], "count_all")])
    shared = per_caption.filter(pc.greater(per_caption["count_all"], 1))
    shared = shared.group_by("group_id", use_threads=False).aggregate([("count_all", "sum")])
    gids = per_group["group_id"].to_numpy()
    size = per_group["count_all"].to_numpy()
    shared_count = np.zeros(len(gids), np.int64)
    if len(shared):
        shared_count[np.searchsorted(gids, shared["group_id"].to_numpy())] = shared["count_all_sum"].to_numpy()
    reps = groups.filter(groups["is_representative"]).sort_by("group_id")
    table = pa.table({
        "group_id": gids, "size": size.astype(np.int32), "representative_key": reps["key"],
        "distinct_captions": per_group["caption_count_distinct"].to_numpy().astype(np.int32),
        "shared_caption_share": (shared_count / size).astype(np.float32),
        "example_urls": pc.list_slice(per_group["url_list"], 0, EXAMPLE_URLS)}, schema=STATS_SCHEMA)
    return table.sort_by([("size", "descending"), ("group_id", "ascending")])


def assemble_partition(layout: DedupLayout, partition: int, members: pa.Table,
                       report_groups: int) -> dict:
    """Write the partition's groups and group_stats parts; return its summary part."""
    members = members.sort_by([("group_id", "ascending"), ("id", "ascending")])
    gid = members["group_id"].to_numpy()
    _, inverse, sizes = np.unique(gid, return_inverse=True, return_counts=True)
    groups = pa.table({
        "key": members["key"], "id": members["id"], "group_id": members["group_id"],
        "group_size": pa.array(sizes[inverse].astype(np.int32)),
        "is_representative": pa.array(members["id"].to_numpy() == gid),
        "duplicate_count": members["duplicate_count"], "url": members["url"],
        "caption": members["caption"]}, schema=GROUP_SCHEMA)
    # row groups of 64k rows: a reader after a few groups (report, serve) decodes 64k rows
    storage.write_parquet(layout.part("groups", partition), groups, row_group_size=GROUP_ROWS)
    stats = group_stats(groups)
    storage.write_parquet(layout.part("group_stats", partition), stats)
    top = stats.slice(0, report_groups)
    return {
        "partition": partition, "duplicated_images": len(groups), "groups": len(stats),
        "largest_group": int(sizes.max()) if len(sizes) else 0,
        "duplicate_count_histogram": histogram(groups["duplicate_count"].to_numpy(), COUNT_EDGES),
        "group_size_histogram": histogram(sizes, SIZE_EDGES),
        "distinct_captions_histogram": histogram(stats["distinct_captions"].to_numpy(), CAPTION_EDGES),
        "groups_sharing_a_caption": int((stats["shared_caption_share"].to_numpy() > 0).sum()),
        "largest_groups": [[int(g), int(s)] for g, s in zip(top["group_id"].to_numpy(),
                                                            top["size"].to_numpy(), strict=True)],
    }


def merge_summaries(parts: list[dict], model: str, threshold: float, images: int, pairs: int,
                    report_groups: int) -> dict:
    """The job's summary from the partitions' summaries (sums, maxima, the top groups)."""
    def total(key: str) -> int:
        return sum(p[key] for p in parts)

    def summed(key: str, edges: list[int]) -> dict[str, int]:
        """Bin counts summed over parts, bins in edge order (markers are JSON with sorted
        keys, which would put "10-19" before "2")."""
        out = histogram(np.zeros(0, np.int64), edges)
        for p in parts:
            for label, n in p[key].items():
                out[label] += n
        return out

    duplicated, groups = total("duplicated_images"), total("groups")
    counts = summed("duplicate_count_histogram", COUNT_EDGES)
    counts["0"] = counts.get("0", 0) + images - duplicated
    largest = sorted((tuple(g) for p in parts for g in p["largest_groups"]), key=lambda g: (-g[1], g[0]))
    return {
        "model": model, "threshold": threshold, "images": images, "pairs": pairs,
        "duplicated_images": duplicated, "groups": groups, "removable_images": duplicated - groups,
        "kept_images": images - duplicated + groups,
        "largest_group": max((p["largest_group"] for p in parts), default=0),
        "duplicate_count_histogram": counts,
        "group_size_histogram": summed("group_size_histogram", SIZE_EDGES),
        "distinct_captions_histogram": summed("distinct_captions_histogram", CAPTION_EDGES),
        "groups_sharing_a_caption": total("groups_sharing_a_caption"),
        "largest_groups": [{"group_id": g, "size": s} for g, s in largest[:report_groups]],
        "partitions": len(parts),
    }
