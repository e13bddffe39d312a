"""The ranking worker (a Ray actor, GPU on a cluster): holds the pipeline; scores caption
shards (DCS + noise magnitude in one UNet row per caption), and labels the top of the
ranking (ECS, full generations, verbatim ground truth against the training set)."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from PIL import Image

from diffrep import storage
from diffrep.data.demo import tar_bytes
from diffrep.data.images import encode_png
from diffrep.dedup.read import DedupGroups, is_complete
from diffrep.diffusion.pipelines import Checkpoint
from diffrep.rank import truth, verbatim

# One schema for every ground-truth chunk: a chunk whose captions all lack a template (or a
# distance) must not get null-typed columns that the other chunks' tables do not share.
TRUTH_SCHEMA = pa.schema([
    ("caption_id", pa.int64()), ("caption", pa.string()), ("dcs_rank", pa.int64()),
    ("dcs", pa.float64()), ("noise_magnitude", pa.float64()), ("ecs", pa.float64()),
    ("label", pa.string()), ("matching_distance", pa.float64()),
    ("retrieval_distance", pa.float64()), ("template_distance", pa.float64()),
    ("top_neighbour_key", pa.string()), ("top_neighbour_sim", pa.float64()),
    ("template_key", pa.string()), ("template_mask", pa.string()),
    ("own_keys", pa.list_(pa.string())), ("images", pa.list_(pa.string())),
    ("image_tar", pa.string())])


@dataclass(frozen=True, kw_only=True)
class ScoreSettings:
    guidance_scale: float = 7.5
    seed: int = 0
    resolution: int = 512
    batch_size: int = 64
    device: str = "auto"
    pipeline_dtype: str = "auto"


@dataclass(frozen=True, kw_only=True)
class TruthSettings:
    model: str = "sscd_onnx"
    ecs_seeds: int = 4
    edge_threshold: float = 0.5
    gamma: float = 0.75
    gt_seeds: int = 4
    gt_steps: int = 50
    delta_v: float = 0.12
    delta: float = 0.12
    neighbours: int = 5
    template_tolerance: float = 0.1
    dedup_groups: str | None = None
    template_min_fixed_share: float = 0.6


def score_table(den, table: pa.Table, batch_size: int, resolution: int) -> pa.Table:
    """DCS and noise magnitude of every caption of `table`, `batch_size` per UNet call."""
    captions = table["caption"].to_pylist()
    dcs, mag = [], []
    for start in range(0, len(captions), batch_size):
        s = den.scores(captions[start:start + batch_size], resolution)
        dcs.append(s["dcs"])
        mag.append(s["noise_magnitude"])
    dcs_all = np.concatenate(dcs) if dcs else np.zeros(0)
    mag_all = np.concatenate(mag) if mag else np.zeros(0)
    return table.append_column("dcs", pa.array(dcs_all)).append_column(
        "noise_magnitude", pa.array(mag_all))


class RankWorker:
    def __init__(self, root: str, checkpoint: Checkpoint, score: ScoreSettings,
                 truth: TruthSettings | None = None):
        from diffrep.diffusion.pipelines import load_pipeline, resolve_device
        from diffrep.diffusion.scores import Denoiser

        self.root, self.score, self.truth = root, score, truth
        self.device = resolve_device(score.device)
        self.pipe = load_pipeline(checkpoint, self.device, score.pipeline_dtype)
        self.den = Denoiser(self.pipe, score.guidance_scale, score.seed)
        self._matcher = None

    def score_shard(self, captions_url: str, out_url: str) -> dict:
        """Score one caption shard into `out_url` (written atomically: it is the marker)."""
        t0 = time.monotonic()
        table = storage.read_table(captions_url, columns=["caption_id", "caption", "images",
                                                     "duplication", "keys", "shards"])
        scored = score_table(self.den, table, self.score.batch_size, self.score.resolution)
        storage.write_parquet(out_url, scored)
        return {"captions": len(table), "seconds": round(time.monotonic() - t0, 3)}

    # -- ground truth for the top of the ranking --------------------------------------

    def _index(self):
        if self._matcher is None:
            from diffrep.models import create_embedder
            from diffrep.search import Searcher, open_index

            handle = open_index(self.root, self.truth.model)
            random_init = handle.infos.get("embedder", {}).get("random_init", False)
            embedder = create_embedder(self.truth.model, weights="random" if random_init else None,
                                       device=self.device)
            groups = None
            if self.truth.dedup_groups and is_complete(self.truth.dedup_groups):
                groups = DedupGroups(self.truth.dedup_groups)
            self._matcher = (Searcher(handle), embedder, groups)
        return self._matcher

    def truth_chunk(self, rows: list[dict], out_url: str, tar_url: str) -> dict:
        """ECS, J generations and the verbatim label of each caption in `rows` (dicts with
        caption_id, caption, keys, shards, rank, dcs, noise_magnitude); writes the chunk's
        tar, then its parquet (the chunk's marker)."""
        from diffrep.diffusion.generate import generate
        from diffrep.report.images import fetch_corpus_images

        t, s = self.truth, self.score
        searcher, embedder, groups = self._index()
        handle = searcher.handle
        captions = [r["caption"] for r in rows]
        ecs = self._ecs(captions)
        seeds = [s.seed + j for j in range(t.gt_seeds)]
        gens = generate(self.pipe, [c for c in captions for _ in seeds], seeds * len(captions),
                        t.gt_steps, s.guidance_scale, s.resolution, s.batch_size)
        hits = searcher.search(embedder.embed_images(gens), k=min(t.neighbours, handle.ntotal),
                               rerank="exact", candidates=max(50, t.neighbours))
        neighbour_keys = np.array(handle.lookup(hits.ids.ravel(), columns=["key"])["key"].to_pylist(),
                                  dtype=object).reshape(hits.ids.shape)
        members = truth.template_members(searcher, np.unique(hits.ids[hits.ids >= 0]), groups,
                                         t.neighbours)
        wanted, id_key = truth.images_needed(searcher, rows, {m for ms in members.values() for m in ms})
        corpus = {k: verbatim.to_unit(im) for k, im in
                  fetch_corpus_images(self.root, t.model, wanted).items()}
        counts: Counter = Counter()
        out_rows, samples = [], []
        for i, r in enumerate(rows):
            mine = range(i * len(seeds), (i + 1) * len(seeds))  # this caption's generations
            neighbour_ids = sorted({int(x) for q in mine for x in hits.ids[q] if x >= 0})
            verdict, template_key, mask = truth.label_caption(
                [verbatim.to_unit(gens[q]) for q in mine], r["keys"], neighbour_ids, members,
                id_key, corpus, t.delta_v, t.delta, t.template_tolerance, t.template_min_fixed_share)
            counts[verdict.label] += 1
            counts["own_image_unavailable"] += not any(k in corpus for k in r["keys"])
            names = [f"{r['caption_id']}_{seed}.png" for seed in seeds]
            for q, seed, name in zip(mine, seeds, names, strict=True):
                samples.append((name[:-4], {"png": encode_png(gens[q]), "json": json.dumps(
                    {"caption_id": r["caption_id"], "caption": r["caption"], "seed": seed}).encode()}))
            if mask is not None:
                samples.append((f"{r['caption_id']}_mask", {"png": encode_png(Image.fromarray(mask.astype(np.uint8) * 255))}))
            best_q = max(mine, key=lambda q: hits.sims[q, 0])
            out_rows.append({
                "caption_id": r["caption_id"], "caption": r["caption"], "dcs_rank": r["rank"],
                "dcs": r["dcs"], "noise_magnitude": r["noise_magnitude"], "ecs": ecs[i],
                "label": verdict.label, "matching_distance": verdict.matching_distance,
                "retrieval_distance": verdict.retrieval_distance,
                "template_distance": verdict.template_distance,
                "top_neighbour_key": neighbour_keys[best_q, 0],
                "top_neighbour_sim": float(hits.sims[best_q, 0]),
                "template_key": template_key,
                "template_mask": f"{r['caption_id']}_mask.png" if mask is not None else None,
                "own_keys": r["keys"], "images": names, "image_tar": tar_url})
        storage.write_bytes(tar_url, tar_bytes(samples))
        storage.write_parquet(out_url, pa.Table.from_pylist(out_rows, schema=TRUTH_SCHEMA))
        return {"captions": len(rows), "labels": dict(counts)}

    def _ecs(self, captions: list[str]) -> list[float]:
        """ECS of each caption: J one-step samples decoded, Sobel edges, consistency."""
        from diffrep.diffusion.scores import edge_consistency, one_step_images, sobel_edges

        t, s = self.truth, self.score
        out: list[float] = []
        for i in range(0, len(captions), s.batch_size):
            imgs = one_step_images(self.den, captions[i:i + s.batch_size], s.resolution,
                                   [s.seed + j for j in range(t.ecs_seeds)])
            out.extend(edge_consistency(sobel_edges(im, t.edge_threshold), t.gamma) for im in imgs)
        return out

