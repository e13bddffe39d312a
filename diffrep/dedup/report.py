"""The dedup report: duplicate-count and caption-multiplicity histograms, and the largest
groups as galleries with captions and similarities."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from diffrep import storage
from diffrep.dedup.layout import DedupLayout, group_part_of
from diffrep.report.html import esc, figure, page, svg_bars, table, thumbnail_data_uri
from diffrep.search.index import IndexHandle


def write_report(layout: DedupLayout, handle: IndexHandle, summary: dict, members_per_group: int,
                 parts: int) -> str:
    """Write report.html (self-contained); returns its URL. Reads only the rows of the
    largest groups (summary["largest_groups"]) from the group parts (of `parts`) that hold
    them: memory is those groups' rows and one row group, not a part."""
    top = np.array([g["group_id"] for g in summary["largest_groups"]], np.int64)
    top_parts = group_part_of(top, parts)
    stats_rows, shown = [], {}
    for part in sorted(set(top_parts.tolist())):
        wanted_ids = pa.array(top[top_parts == part], pa.int64())
        wanted = [("group_id", "in", wanted_ids.to_pylist())]
        stats_rows += storage.read_table(layout.part("group_stats", part), filters=wanted).to_pylist()
        groups = storage.read_table(layout.part("groups", part), filters=wanted)
        for gid in wanted_ids.to_pylist():
            members = groups.filter(pc.equal(groups["group_id"], gid)).sort_by(
                [("is_representative", "descending"), ("duplicate_count", "descending"),
                 ("id", "ascending")])
            shown[gid] = members.slice(0, members_per_group).to_pylist()
    stats_rows.sort(key=lambda r: (-r["size"], r["group_id"]))
    members = [m for ms in shown.values() for m in ms]
    images = handle.corpus_images([m["id"] for m in members], [m["key"] for m in members])

    h = summary["duplicate_count_histogram"]
    body = [
        f"<p>{summary['images']} images, model {esc(summary['model'])}, duplicate when similarity "
        f"&gt; {summary['threshold']}: {summary['pairs']} pairs, {summary['duplicated_images']} "
        f"images in {summary['groups']} groups (largest {summary['largest_group']}); keeping one "
        f"per group removes {summary['removable_images']} images.</p>",
        svg_bars(list(h), {"images": list(h.values())}, "Duplicates per image",
                 "number of duplicates above the threshold", "images", log_y=True),
        svg_bars(list(summary["distinct_captions_histogram"]),
                 {"groups": list(summary["distinct_captions_histogram"].values())},
                 "Distinct captions per duplicate group", "distinct captions", "groups"),
        svg_bars(list(summary["group_size_histogram"]),
                 {"groups": list(summary["group_size_histogram"].values())},
                 "Group sizes", "images in the group", "groups", log_y=True),
        "<h2>Largest groups</h2>",
        table(["group", "size", "representative", "distinct captions", "shared caption share"],
              [(r["group_id"], r["size"], r["representative_key"], r["distinct_captions"],
                f"{r['shared_caption_share']:.2f}") for r in stats_rows]),
    ]
    for r in stats_rows:
        members = shown[r["group_id"]]
        figs = "".join(figure(thumbnail_data_uri(images[m["key"]]) if m["key"] in images else None,
                              f"{'[rep] ' if m['is_representative'] else ''}{m['key']}: "
                              f"{m['caption']} ({m['duplicate_count']} dups)") for m in members)
        body.append(f"<h2>Group {r['group_id']}: {r['size']} images, {r['distinct_captions']} "
                    f"distinct caption(s)</h2><div class='gallery'>{figs}</div>")
    url = layout.path("report.html")
    storage.write_bytes(url, page(f"Duplicates in the training set ({summary['model']})",
                                  "".join(body)).encode())
    return url
