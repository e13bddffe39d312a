"""The copy-detector benchmark job: build the sets, write them as WebDataset, score every
model, write results.json, table.md and report.html."""

from __future__ import annotations

import io
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from diffrep import storage
from diffrep.config import ConfigError, helps
from diffrep.copybench.copysets import SETS, make_gallery, make_queries
from diffrep.copybench.evaluate import average_ranks, extract, score_regions, score_sets
from diffrep.data.demo import load_source_photos, tar_bytes
from diffrep.models import check_model_name, create_embedder, default_weights
from diffrep.report.html import esc, figure, page, table, thumbnail_data_uri
from diffrep.search.config import RegionGrid
from diffrep.search.regions import embed_regions

log = logging.getLogger("diffrep")



@dataclass
class CopyBenchConfig(RegionGrid):
    out_dir: str = field(default="out/copybench", metadata=helps("where sets and results go"))
    models: list[str] = field(default_factory=lambda: ["sscd_onnx", "sscd_distilled_onnx"],
                              metadata=helps("descriptors to compare (see diffrep.models)"))
    weights: dict[str, Any] = field(default_factory=dict, metadata=helps(
        "per model: file, URL#sha256=, pretrained[:tag] or random"))
    sets: list[str] = field(default_factory=lambda: list(SETS), metadata=helps(
        f"copy sets: {', '.join(SETS)}"))
    crops_per_photo: int = field(default=3, metadata=helps("gallery crops of each photo"))
    use_opencv_doc: bool = field(default=True, metadata=helps("also Debian opencv-doc photos when present"))
    split_product: bool = field(default=True, metadata=helps(
        "also score token models (DINO, timm ViTs) with split-product"))
    region_models: list[str] = field(default_factory=lambda: ["sscd_onnx", "sscd_distilled_onnx"],
                                     metadata=helps(
        "models also scored with object-level matching (diffrep.search.regions: best "
        "region-to-image similarity over grid crops of each query), a row '<model>, regions'"))
    write_webdataset: bool = field(default=True, metadata=helps("write gallery and sets as WebDataset tars"))
    batch_size: int = field(default=32, metadata=helps("images per model call"))
    device: str = field(default="cpu", metadata=helps("cpu or cuda"))
    seed: int = field(default=0, metadata=helps("crops and copies seed"))


def validate(cfg: CopyBenchConfig) -> None:
    errors = []
    for s in cfg.sets:
        if s not in SETS:
            errors.append(f"copybench.sets: unknown set {s!r}; known: {', '.join(SETS)}")
    for m in cfg.models:
        try:
            check_model_name(m)
        except ValueError as exc:
            errors.append(f"copybench.models: {exc}")
    if not cfg.models or not cfg.sets:
        errors.append("copybench.models and copybench.sets must not be empty")
    if cfg.crops_per_photo < 1 or cfg.batch_size < 1:
        errors.append("copybench.crops_per_photo and batch_size must be >= 1")
    if errors:
        raise ConfigError("invalid copybench config:\n  - " + "\n  - ".join(errors))


def _jpeg(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95)
    return buf.getvalue()


def run_copybench(cfg: CopyBenchConfig) -> dict:
    photos = load_source_photos(cfg.use_opencv_doc)
    gallery = make_gallery(photos, cfg.crops_per_photo, cfg.seed)
    query_sets = {s: make_queries(gallery, s, cfg.seed) for s in cfg.sets}
    log.info("copybench: %d photos, gallery of %d crops, %d queries per set, sets %s",
             len(photos), len(gallery), len(gallery), cfg.sets)
    if cfg.write_webdataset:
        storage.write_bytes(storage.join(cfg.out_dir, "gallery.tar"), tar_bytes(
            [(g.key, {"jpg": _jpeg(g.image), "json": json.dumps({"group": g.group}).encode()}) for g in gallery]))
        for name, queries in query_sets.items():
            storage.write_bytes(storage.join(cfg.out_dir, "sets", f"{name}.tar"), tar_bytes(
                [(q.key, {"jpg": _jpeg(q.image), "json": json.dumps(
                    {"source_key": q.source_key, "set": q.set}).encode()}) for q in queries]))
    rows: dict[str, dict[str, dict]] = {}
    described = {}
    for model in cfg.models:
        t0 = time.monotonic()
        embedder = create_embedder(model, weights=cfg.weights.get(model, default_weights(model)),
                                   device=cfg.device)
        described[model] = embedder.describe()
        tokens = cfg.split_product and embedder.has_tokens
        g_feats = extract(embedder, [g.image for g in gallery], cfg.batch_size, tokens)
        q_feats = {s: extract(embedder, [q.image for q in qs], cfg.batch_size, tokens)
                   for s, qs in query_sets.items()}
        label = f"{model}{' (random init)' if embedder.random_init else ''}"
        for similarity, per_set in score_sets(gallery, query_sets, g_feats, q_feats).items():
            row = label if similarity == "inner_product" else f"{label}, split-product"
            rows[row] = {s: m.__dict__ for s, m in per_set.items()}
        if model in cfg.region_models:
            spec = cfg.region_spec(model)
            t1 = time.monotonic()
            regions = {s: embed_regions(embedder, [q.image for q in qs], spec, cfg.batch_size).vectors
                       for s, qs in query_sets.items()}
            g_regions = embed_regions(embedder, [g.image for g in gallery], spec, cfg.batch_size).vectors \
                if spec.rerank else None
            per_set = score_regions(gallery, query_sets, g_feats, regions, g_regions, spec)
            rows[f"{label}, regions"] = {s: m.__dict__ for s, m in per_set.items()}
            log.info("copybench: %s regions (%d per query) scored in %.1f s", model, spec.count(),
                     time.monotonic() - t1)
        log.info("copybench: %s scored in %.1f s", model, time.monotonic() - t0)
    ranks = average_ranks({r: {s: v["map"] for s, v in per.items()} for r, per in rows.items()})
    results = {"sets": cfg.sets, "gallery": len(gallery), "photos": len(photos),
               "queries_per_set": len(gallery), "models": described, "rows": rows,
               "average_rank": ranks, "metric_notes": "mAP = mean over queries of 1/rank of the "
               "source (one positive per query; other crops of the source photo excluded); "
               "micro-AP over all (query, candidate) pairs; recall@1"}
    storage.write_json(storage.join(cfg.out_dir, "results.json"), results)
    storage.write_bytes(storage.join(cfg.out_dir, "table.md"), markdown_table(results).encode())
    storage.write_bytes(storage.join(cfg.out_dir, "report.html"), report(results, query_sets, gallery).encode())
    return results


def markdown_table(results: dict) -> str:
    sets = results["sets"]
    lines = ["| descriptor | " + " | ".join(sets) + " | average rank |",
             "| --- | " + " | ".join("---" for _ in sets) + " | --- |"]
    for row, per in sorted(results["rows"].items(), key=lambda kv: results["average_rank"][kv[0]]):
        lines.append(f"| {row} | " + " | ".join(f"{per[s]['map']:.3f}" for s in sets)
                     + f" | {results['average_rank'][row]:.1f} |")
    return "\n".join(lines) + (f"\n\nmAP of retrieving each query's source among {results['gallery']} "
                               f"gallery crops of {results['photos']} photos; {results['queries_per_set']} "
                               "queries per set.\n")


def report(results: dict, query_sets: dict, gallery: list) -> str:
    sets = results["sets"]
    head = ["descriptor"] + [f"{s} mAP / µAP / R@1" for s in sets] + ["average rank"]
    body_rows = [[row] + [f"{per[s]['map']:.3f} / {per[s]['micro_ap']:.3f} / {per[s]['recall_at_1']:.2f}"
                          for s in sets] + [f"{results['average_rank'][row]:.1f}"]
                 for row, per in sorted(results["rows"].items(), key=lambda kv: results["average_rank"][kv[0]])]
    by_key = {g.key: g for g in gallery}
    examples = []
    for s, queries in query_sets.items():
        figs = []
        for q in queries[:4]:
            figs.append(figure(thumbnail_data_uri(q.image), f"{s}: query"))
            figs.append(figure(thumbnail_data_uri(by_key[q.source_key].image), f"source {q.source_key}"))
        examples.append(f"<h2>{esc(s)}</h2><div class='gallery'>{''.join(figs)}</div>")
    return page("Copy-detector benchmark (paper 1, Table 1)",
                f"<p class='note'>{esc(results['metric_notes'])}</p>" + table(head, body_rows)
                + "".join(examples))
