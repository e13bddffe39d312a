"""The ranking report: precision vs number of verbatims found for the DCS, ECS and
noise-magnitude orderings of the top captions (paper 2 Fig. 3), the label counts, every
labelled caption (the whole top_n) in one table, and the first report_top captions'
generations beside their training matches and template masks.

Every count links to the rows it counts: the label table lists, per label, the DCS ranks
of its captions as links to their rows (anchors "rank-<N>"); a row whose generations are
shown links to them (anchors "gallery-<N>")."""

from __future__ import annotations

import pyarrow as pa

from diffrep import storage
from diffrep.rank.config import RankConfig
from diffrep.rank.layout import RankLayout
from diffrep.report.html import (
    Raw,
    anchored,
    esc,
    figure,
    fmt,
    link,
    page,
    svg_lines,
    table,
    thumbnail_data_uri,
)
from diffrep.report.images import read_tar_images
from diffrep.search import open_index

PAIR_STYLE = ("<style>.row{display:flex;gap:6px;padding:6px;border:1px solid #ddd;margin:4px 0}"
              "</style>")


def row_anchor(rank: int) -> str:
    return f"rank-{rank}"


def gallery_anchor(rank: int) -> str:
    return f"gallery-{rank}"


def label_table(rows: list[dict]) -> str:
    """Label | captions | their DCS ranks, each a link to the caption's row."""
    by_label: dict[str, list[int]] = {}
    for r in rows:
        by_label.setdefault(r["label"], []).append(r["dcs_rank"])
    out = []
    for label in sorted(by_label):
        ranks = sorted(by_label[label])
        out.append((label, link(row_anchor(ranks[0]), len(ranks)),
                    Raw(", ".join(link(row_anchor(n), f"#{n}") for n in ranks))))
    return table(["label", "captions", "DCS ranks (links to their rows)"], out)


def untested_note(n: int) -> str:
    """Why some captions are "untested" and how to make them testable."""
    return (f"<p class='note' id='untested'><b>{n} caption(s) untested</b> for template "
            f"verbatim (TV): they are neither MV nor RV, and none of their training "
            f"neighbours had a near-duplicate group of two or more readable images to build a "
            f"template mask from, so whether they copy a template was not tested (they are not "
            f"counted as 'none', and the precision curves leave them out). To make them "
            f"testable: make sure the training images can be read (the embed job's input "
            f"shards), raise dcs.neighbours, or run jobs.dedup at a threshold that groups "
            f"the template's variants and set dcs.dedup_groups to its output.</p>")


def caption_table(rows: list[dict], shown: set[int]) -> str:
    """Every labelled caption, by DCS rank; `shown`: ranks whose generations appear below."""
    return table(
        ["DCS rank", "caption", "DCS", "noise magnitude", "ECS", "label", "matching dist.",
         "retrieval dist.", "template dist.", "generations"],
        [(anchored(row_anchor(r["dcs_rank"]), r["dcs_rank"]), r["caption"], fmt(r["dcs"]),
          fmt(r["noise_magnitude"]), f"{r['ecs']:.0f}", r["label"], fmt(r["matching_distance"]),
          fmt(r["retrieval_distance"]), fmt(r["template_distance"]),
          link(gallery_anchor(r["dcs_rank"]), "shown below") if r["dcs_rank"] in shown else "")
         for r in rows])


def galleries(cfg: RankConfig, rows: list[dict]) -> list[str]:
    """Each caption's first two generations, own training image, nearest training image
    and template mask."""
    if not rows:
        return []
    handle = open_index(cfg.root, cfg.model, verify_files=False)
    keys = {k for r in rows for k in [r["top_neighbour_key"], r["template_key"], *r["own_keys"][:1]] if k}
    ids = handle.key_to_id(sorted(keys))
    train = handle.corpus_images(list(ids.values()), list(ids))
    body = [PAIR_STYLE]
    for r in rows:
        names = set(r["images"][:2]) | ({r["template_mask"]} if r["template_mask"] else set())
        imgs = read_tar_images(r["image_tar"], names)
        figs = [figure(thumbnail_data_uri(imgs[n]) if n in imgs else None, f"generation {n}")
                for n in r["images"][:2]]
        own = r["own_keys"][0] if r["own_keys"] else None
        figs.append(figure(thumbnail_data_uri(train[own]) if own in train else None,
                           f"own training image {own}"))
        nk = r["top_neighbour_key"]
        figs.append(figure(thumbnail_data_uri(train[nk]) if nk in train else None,
                           f"nearest training image {nk} (SSCD {r['top_neighbour_sim']:.3f})"))
        if r["template_mask"]:
            m = imgs.get(r["template_mask"])
            figs.append(figure(thumbnail_data_uri(m) if m else None,
                               f"template mask of {r['template_key']} (white: fixed)"))
        body.append(f"<h3 id='{gallery_anchor(r['dcs_rank'])}'>#{r['dcs_rank']} [{esc(r['label'])}] "
                    f"{esc(r['caption'])}</h3><div class='row'>{''.join(figs)}</div>")
    return body


def write_report(layout: RankLayout, cfg: RankConfig, summary: dict, truth: pa.Table | None) -> str:
    body = [f"<p>Run <b>{esc(cfg.run)}</b>: {summary['scored']} distinct captions scored with "
            f"DCS (one UNet step from sigma_max, guidance {cfg.guidance_scale}, seed {cfg.seed}, "
            f"{summary.get('resolution', cfg.resolution)} px) on {esc(cfg.checkpoint)}. The top "
            f"{cfg.top_n} by DCS were given ECS "
            f"({cfg.ecs_seeds} one-step samples) and {cfg.gt_seeds} full generations each, "
            f"labelled against the training set: distance = {esc(summary['distance'])}, "
            f"matching verbatim at &le; {cfg.delta_v}, retrieval/template at &le; {cfg.delta}.</p>"]
    if truth is not None and len(truth):
        rows = truth.sort_by("dcs_rank").to_pylist()
        shown = rows[:cfg.report_top]
        body.append(label_table(rows))
        if summary.get("untested"):
            body.append(untested_note(summary["untested"]))
        curves = {name: (c["found"], c["precision"]) for name, c in summary["curves"].items()}
        left_out = f", {summary['untested']} untested left out" if summary.get("untested") else ""
        body.append(svg_lines(curves, f"Precision vs number of verbatims found (top of the DCS "
                                      f"ranking{left_out})",
                              "verbatims found", "precision", y_max=1.0))
        body.append(f"<h2>Labelled captions (the top {len(rows)} by DCS)</h2>"
                    + caption_table(rows, {r["dcs_rank"] for r in shown}))
        if shown:
            body.append(f"<h2>Generations of the top {len(shown)} (report_top)</h2>")
            body.extend(galleries(cfg, shown))
    url = layout.path("report.html")
    storage.write_bytes(url, page(f"Caption ranking {cfg.run}", "".join(body)).encode())
    return url
