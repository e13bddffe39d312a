"""The scan report: per-checkpoint histograms of top-1 similarity against the baseline,
the comparison table, and the most similar generation/training pairs side by side."""

from __future__ import annotations

import logging
from collections import defaultdict

import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from diffrep import storage
from diffrep.report.html import esc, figure, fmt, page, svg_bars, table, thumbnail_data_uri
from diffrep.report.images import fetch_corpus_images, read_tar_images
from diffrep.scan.layout import ScanLayout
from diffrep.search.index import IndexHandle

log = logging.getLogger("diffrep")

PAIR_STYLE = ("<style>.pair{display:flex;gap:6px;padding:6px;border:1px solid #ddd;"
              "margin:4px}.pairs{display:flex;flex-wrap:wrap}</style>")


def _generated_images(rows: list[dict]) -> dict[str, Image.Image]:
    """{gen_id: image} read from the unit tars the rows name."""
    by_tar: dict[str, dict[str, str]] = defaultdict(dict)
    for r in rows:
        by_tar[r["image_tar"]][r["image_member"]] = r["gen_id"]
    out = {}
    for url, members in by_tar.items():
        for name, image in read_tar_images(url, set(members)).items():
            out[members[name]] = image
    return out


def _row(name: str, d: dict, source: dict | None = None, n: int | None = None) -> list:
    q = d.get("quantiles", {})
    return [name, n if n is not None else d.get("count", 0), f"{100 * d.get('share_above_threshold', 0):.1f}%",
            fmt(q.get("0.5")), fmt(q.get("0.95")), fmt(q.get("0.99")), fmt(d.get("max")),
            fmt((source or {}).get("quantiles", {}).get("0.5")) if source and source.get("count") else ""]


def write_report(layout: ScanLayout, handle: IndexHandle, summary: dict,
                 tables: dict[str, pa.Table], top_pairs: int) -> str:
    """Write report.html (self-contained); returns its URL."""
    thr, base = summary["threshold"], summary["baseline"]
    edges = summary["bin_edges"]
    labels = [f"{edges[i]:.2f}" for i in range(len(edges) - 1)]
    rows = [_row(name, s["top1"], s["source"], s["generations"])
            for name, s in summary["checkpoints"].items()]
    rows.append(_row("baseline: training image -> rest of training set", base))
    body = [
        f"<p>Run <b>{esc(summary['run'])}</b>: generations embedded with {esc(summary['model'])} "
        f"and searched in the training index ({handle.ntotal} images). Replication: top-1 "
        f"similarity &gt; {thr}. The baseline is the top-1 similarity of {base.get('count', 0)} "
        f"random training images to the rest of the training set (self excluded).</p>",
        "<h2>Checkpoints compared</h2>",
        table(["checkpoint", "generations", f"top-1 > {thr}", "median", "p95", "p99", "max",
               "median sim. to own training image"], rows),
    ]
    for name, s in summary["checkpoints"].items():
        body.append(f"<h2>{esc(name)}</h2>")
        body.append(svg_bars(labels, {f"{name}: generation -> train": s["top1"].get("histogram", []),
                                      "baseline: train -> train": base.get("histogram", [])},
                             f"Top-1 similarity, {name} vs baseline", "similarity (bin start)",
                             "fraction"))
        if s["source"].get("count"):
            body.append(svg_bars(labels, {"generation -> its caption's training image":
                                          s["source"]["histogram"]},
                                 f"Similarity to the prompt's own training image, {name}",
                                 "similarity (bin start)", "fraction"))
    body.append(PAIR_STYLE)
    for name, t in tables.items():
        top = t.sort_by([("top1_sim", "descending"), ("gen_id", "ascending")]).slice(0, top_pairs)
        top = top.filter(pc.is_valid(top["top1_id"])).to_pylist()
        gen_images = _generated_images(top)
        wanted: dict[str, set[str]] = {}
        for shard, _, sel in handle.locate([r["top1_id"] for r in top]):
            wanted.setdefault(shard, set()).update(top[i]["top1_key"] for i in sel)
        train_images = fetch_corpus_images(handle.layout.root, handle.model, wanted)
        pairs = []
        for r in top:
            g = gen_images.get(r["gen_id"])
            m = train_images.get(r["top1_key"])
            flag = " REPLICATION" if r["top1_sim"] > thr else ""
            seed = f", seed {r['seed']}" if r["seed"] is not None else ""
            pairs.append(
                "<div class='pair'>"
                + figure(thumbnail_data_uri(g) if g else None,
                         f"generated{seed}: {r['prompt'] or '(no prompt)'}")
                + figure(thumbnail_data_uri(m) if m else None,
                         f"train {r['top1_key']}: {r['match_captions'][0] or ''} "
                         f"(sim {r['top1_sim']:.3f}{flag})")
                + "</div>")
        body.append(f"<h2>{esc(name)}: top {len(top)} generation / training pairs</h2>"
                    f"<div class='pairs'>{''.join(pairs)}</div>")
    url = layout.path("report.html")
    storage.write_bytes(url, page(f"Memorization scan {summary['run']}", "".join(body)).encode())
    return url
