"""The ranking report: precision vs number of verbatims found for the DCS, ECS and
noise-magnitude orderings of the top captions (paper 2 Fig. 3), the label counts, and the
top captions' generations beside their training matches and template masks."""

from __future__ import annotations

import pyarrow as pa

from diffrep import storage
from diffrep.rank.config import RankConfig
from diffrep.rank.layout import RankLayout
from diffrep.report.html import esc, figure, fmt, page, svg_lines, table, thumbnail_data_uri
from diffrep.report.images import read_tar_images
from diffrep.search import open_index

PAIR_STYLE = ("<style>.row{display:flex;gap:6px;padding:6px;border:1px solid #ddd;margin:4px 0}"
              "</style>")


def write_report(layout: RankLayout, cfg: RankConfig, summary: dict, truth: pa.Table | None) -> str:
    body = [f"<p>Run <b>{esc(cfg.run)}</b>: {summary['scored']} distinct captions scored with "
            f"DCS (one UNet step from sigma_max, guidance {cfg.guidance_scale}, seed {cfg.seed}, "
            f"{summary.get('resolution', cfg.resolution)} px) on {esc(cfg.checkpoint)}. The top {cfg.top_n} by DCS were given ECS "
            f"({cfg.ecs_seeds} one-step samples) and {cfg.gt_seeds} full generations each, "
            f"labelled against the training set: distance = {esc(summary['distance'])}, "
            f"matching verbatim at &le; {cfg.delta_v}, retrieval/template at &le; {cfg.delta}.</p>"]
    if truth is not None and len(truth):
        body.append(table(["label", "captions"], sorted(summary["labels"].items())))
        curves = {name: (c["found"], c["precision"]) for name, c in summary["curves"].items()}
        body.append(svg_lines(curves, "Precision vs number of verbatims found (top of the DCS ranking)",
                              "verbatims found", "precision", y_max=1.0))
        rows = truth.sort_by("dcs_rank").slice(0, cfg.report_top).to_pylist()
        body.append("<h2>Top captions</h2>" + table(
            ["DCS rank", "caption", "DCS", "noise magnitude", "ECS", "label", "matching dist.",
             "retrieval dist.", "template dist."],
            [(r["dcs_rank"], r["caption"], fmt(r["dcs"]), fmt(r["noise_magnitude"]), f"{r['ecs']:.0f}",
              r["label"], fmt(r["matching_distance"]), fmt(r["retrieval_distance"]),
              fmt(r["template_distance"])) for r in rows]))
        handle = open_index(cfg.root, cfg.model, verify_files=False)
        keys = {k for r in rows for k in [r["top_neighbour_key"], r["template_key"], *r["own_keys"][:1]] if k}
        ids = handle.key_to_id(sorted(keys))
        train = handle.corpus_images(list(ids.values()), list(ids))
        body.append(PAIR_STYLE)
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
            body.append(f"<h3>#{r['dcs_rank']} [{esc(r['label'])}] {esc(r['caption'])}</h3>"
                        f"<div class='row'>{''.join(figs)}</div>")
    url = layout.path("report.html")
    storage.write_bytes(url, page(f"Caption ranking {cfg.run}", "".join(body)).encode())
    return url
