"""The scan report: per-checkpoint histograms of top-1 similarity against the baseline,
the comparison table, and the most similar generation/training pairs side by side."""

from __future__ import annotations

import logging
from collections import defaultdict

import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from diffrep import storage
from diffrep.report.html import (
    anchored,
    esc,
    figure,
    fmt,
    link,
    page,
    svg_bars,
    table,
    thumbnail_data_uri,
)
from diffrep.report.images import draw_box, read_tar_images
from diffrep.scan.layout import ScanLayout
from diffrep.search.index import IndexHandle
from diffrep.search.region_rule import RegionRule

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


def pairs_anchor(name: str) -> str:
    return "pairs-" + "".join(c if c.isalnum() else "-" for c in name)


def above_anchor(name: str) -> str:
    return "above-" + "".join(c if c.isalnum() else "-" for c in name)


def above_table(name: str, t: pa.Table, thr: float, rule: RegionRule | None) -> str:
    """Every generation of checkpoint `name` the headline counts (top-1 > thr, or a region
    match the rule calls a copy when regions ran), as text rows (anchor above-<name>)."""
    regions = rule is not None and "region_sim" in t.column_names
    rows = []
    for r in t.sort_by([("top1_sim", "descending"), ("gen_id", "ascending")]).to_pylist():
        top1 = r["top1_sim"] is not None and r["top1_sim"] > thr
        verdict = rule.verdict(r["region_sim"], r.get("region_verified")) if regions else ""
        if top1 or verdict.startswith("copy"):
            rows.append([r["gen_id"], r["prompt"] or "", r["seed"] if r["seed"] is not None else "",
                         r["top1_key"] or "", fmt(r["top1_sim"]), fmt(r["source_sim"]),
                         *([r["region_key"] or "", fmt(r["region_sim"]), verdict] if regions else [])])
    head = ["generation", "prompt", "seed", "top-1 training image", "top-1 sim.", "sim. to own image",
            *(["region match", "region score", "region verdict"] if regions else [])]
    what = f"top-1 &gt; {thr}" + (f" or a region match counted as a copy (score &gt; "
                                   f"{fmt(rule.threshold)}{_rule_words(rule)})" if regions else "")
    return (f"<h3 id='{above_anchor(name)}'>{esc(name)}: the {len(rows)} generation(s) with "
            f"{what}</h3>" + (table(head, rows) if rows else "<p class='note'>none</p>"))


def _rule_words(rule: RegionRule) -> str:
    """How geometry changes the region threshold's verdict, in words."""
    words = "; not rejected by geometry" if rule.veto else ""
    if rule.rescue_from is not None:
        words += f"; or in ({fmt(rule.rescue_from)}, {fmt(rule.threshold)}] and verified by geometry"
    return words


def _row(name: str, d: dict, source: dict | None = None, n: int | None = None,
         share_link: str | None = None, comparison: object = "") -> list:
    """A comparison-table row; `share_link`: anchor of the rows the share counts."""
    q = d.get("quantiles", {})
    share = f"{100 * d.get('share_above_threshold', 0):.1f}%"
    return [name, n if n is not None else d.get("count", 0),
            link(share_link, share) if share_link else share,
            fmt(q.get("0.5")), fmt(q.get("0.95")), fmt(q.get("0.99")), fmt(d.get("max")),
            fmt((source or {}).get("quantiles", {}).get("0.5")) if source and source.get("count") else "",
            comparison]


def _comparison(verdict: str | None) -> object:
    """The 'vs baseline' cell: a link to the warning when the baseline cannot separate."""
    return link("warnings", "uninformative (see warning)") if verdict == "uninformative" else ""


def warnings_block(summary: dict) -> str:
    """The summary's warnings, first on the page (anchor "warnings")."""
    items = summary.get("warnings") or []
    if not items:
        return ""
    return ("<div id='warnings' style='border:2px solid #c00;background:#fee;padding:8px;"
            "margin:8px 0'><b>Warning</b><ul>" + "".join(f"<li>{esc(w)}</li>" for w in items)
            + "</ul></div>")


def write_report(layout: ScanLayout, handle: IndexHandle, summary: dict,
                 tables: dict[str, pa.Table], top_pairs: int) -> str:
    """Write report.html (self-contained); returns its URL."""
    thr, base = summary["threshold"], summary["baseline"]
    region_thr, region_base = summary.get("region_threshold"), summary.get("region_baseline")
    rule = None
    if region_base is not None:
        rule = RegionRule(**summary["region_rule"]) if "region_rule" in summary else RegionRule(region_thr)
    edges = summary["bin_edges"]
    labels = [f"{edges[i]:.2f}" for i in range(len(edges) - 1)]
    rows = [_row(name, s["top1"], s["source"], s["generations"], above_anchor(name),
                 _comparison(s.get("baseline_comparison")))
            for name, s in summary["checkpoints"].items()]
    rows.append(_row(anchored("baseline", "baseline: training image -> rest of training set"), base,
                     comparison="cannot separate" if base.get("uninformative") else ""))
    regions = [] if region_base is None else _region_section(summary, labels)
    body = [
        warnings_block(summary),
        f"<p>Run <b>{esc(summary['run'])}</b>: generations embedded with {esc(summary['model'])} "
        f"and searched in the training index ({handle.ntotal} images). Replication: top-1 "
        f"similarity &gt; {thr}. The baseline is the top-1 similarity of {base.get('count', 0)} "
        f"random training images to the rest of the training set (self excluded).</p>",
        (f"<p class='note'>Object-level matching: {esc(summary['regions']['reason'])}.</p>"
         if summary.get("regions", {}).get("switched_off") else ""),
        "<h2>Checkpoints compared</h2>",
        table(["checkpoint", "generations", f"top-1 > {thr}", "median", "p95", "p99", "max",
               "median sim. to own training image", "vs baseline"], rows),
    ] + regions
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
        train_images = handle.corpus_images([r["top1_id"] for r in top], [r["top1_key"] for r in top])
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
        body.append(f"<h2 id='{pairs_anchor(name)}'>{esc(name)}: top {len(top)} generation / "
                    f"training pairs</h2>"
                    f"<div class='pairs'>{''.join(pairs)}</div>")
        if region_base is not None:
            body.append(_region_pairs(name, t, handle, rule, top_pairs))
        body.append(above_table(name, t, thr, rule))
    url = layout.path("report.html")
    storage.write_bytes(url, page(f"Memorization scan {summary['run']}", "".join(body)).encode())
    return url


def _region_section(summary: dict, labels: list[str]) -> list[str]:
    """Comparison table and histograms of region scores (object-level matching)."""
    thr, base = summary["region_threshold"], summary["region_baseline"]
    rows = [[name, s["generations"], f"{100 * s['region'].get('share_above_threshold', 0):.1f}%",
             fmt(s["region"].get("quantiles", {}).get("0.5")), fmt(s["region"].get("max")),
             link(above_anchor(name), s["replicated"]), _comparison(s.get("region_baseline_comparison")),
             ] for name, s in summary["checkpoints"].items()]
    rows.append(["baseline: training image regions -> rest of training set", base.get("count", 0),
                 f"{100 * base.get('share_above_threshold', 0):.1f}%",
                 fmt(base.get("quantiles", {}).get("0.5")), fmt(base.get("max")), "",
                 "cannot separate" if base.get("uninformative") else ""])
    out = ["<h2>Object-level matching (regions)</h2>",
           f"<p>Each generation is also cut into grid crops; its region score is the best "
           f"similarity of any crop (or the whole image) to a training image, and the box of that "
           f"crop is kept. Region scores are higher than global ones by construction, so they have "
           f"their own threshold. Replicated: top-1 &gt; {summary['threshold']} or region score "
           f"&gt; {fmt(thr)}.</p>",
           _calibration_block(summary.get("region_calibration")),
           _rescue_block(summary.get("region_rule", {}).get("rescue")),
           table(["checkpoint", "generations", f"region score > {fmt(thr)}", "median", "max",
                  "replicated", "vs baseline"], rows)]
    for name, s in summary["checkpoints"].items():
        out.append(svg_bars(labels, {f"{name}: generation regions -> train": s["region"].get("histogram", []),
                                     "baseline: train regions -> train": base.get("histogram", [])},
                            f"Region score, {name} vs baseline", "region score (bin start)", "fraction"))
    return out


def _calibration_block(calibration: dict | None) -> str:
    """Which region threshold decided and why, with the nulls it came from (id
    "region-threshold")."""
    if not calibration:
        return ""
    rows = [[name, d.get("count", 0), fmt(d.get("max")), fmt(d.get("p99")),
             d.get("above_floor", "")] for name, d in calibration["nulls"].items()]
    nulls = table(["null (copies nothing)", "images", "max region score", "p99",
                   f"above the floor {calibration['floor']:g}"], rows) if rows else ""
    return (f"<div id='region-threshold'><p><b>Region threshold {fmt(calibration['threshold'])}"
            f"</b> ({esc(calibration['decided_by'])}): {esc(calibration['reason'])}.</p>"
            f"{nulls}</div>")


def _rescue_block(rescue: dict | None) -> str:
    """Whether verified matches just below the threshold count, and why (id "region-rescue")."""
    if not rescue:
        return ""
    sharing = rescue.get("nulls_sharing_region", {})
    rows = [[name, rescue["nulls_in_band"][name], rescue["nulls_verified"][name], sharing.get(name, 0)]
            for name in rescue["nulls_in_band"]]
    lo, hi = rescue["band"]
    nulls = table([f"null scoring in ({fmt(lo)}, {fmt(hi)}]", "tested", "verified",
                   "left out: an identical region"], rows) if rows else ""
    return (f"<div id='region-rescue' style='margin-bottom:12px'><p><b>Geometric rescue "
            f"{'on' if rescue['enabled'] else 'off'}</b>: {esc(rescue['reason'])}.</p>{nulls}</div>")


def _region_pairs(name: str, t: pa.Table, handle: IndexHandle, rule: RegionRule, top_pairs: int) -> str:
    """The highest region scores: the generation with the matched box drawn, beside the
    training image it matched."""
    top = t.filter(pc.is_valid(t["region_id"]))
    top = top.sort_by([("region_sim", "descending"), ("gen_id", "ascending")]).slice(0, top_pairs).to_pylist()
    gen_images = _generated_images(top)
    train_images = handle.corpus_images([r["region_id"] for r in top], [r["region_key"] for r in top])
    pairs = []
    for r in top:
        g, m = gen_images.get(r["gen_id"]), train_images.get(r["region_key"])
        verified = r.get("region_verified")
        verdict = rule.verdict(r["region_sim"], verified)
        flag = (" REPLICATION" + (": verified below the threshold" if "below" in verdict else "")
                if verdict.startswith("copy") else "")
        if verified is not None:
            flag += (f"; geometry: {'verified' if verified else 'rejected'}, "
                     f"{r.get('region_inliers')} inliers")
        box = ", ".join(f"{v:.2f}" for v in r["region_box"])
        pairs.append("<div class='pair'>"
                     + figure(thumbnail_data_uri(draw_box(g, r["region_box"])) if g else None,
                              f"generated: {r['prompt'] or '(no prompt)'}; box ({box})")
                     + figure(thumbnail_data_uri(m) if m else None,
                              f"train {r['region_key']} (region {r['region_sim']:.3f}{flag}; "
                              f"whole image {r['region_global_sim']:.3f})")
                     + "</div>")
    return (f"<h2>{esc(name)}: top {len(top)} region matches (box drawn on the generation)</h2>"
            f"<div class='pairs'>{''.join(pairs)}</div>")
