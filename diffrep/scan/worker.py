"""The scan worker: holds a pipeline (or none, for given images), the descriptor and a
searcher; turns one work unit into a generations parquet, an image tar and, last, a
completion marker. Runs as a Ray actor (GPU on a cluster), or in process."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa

from diffrep import storage
from diffrep.data.demo import tar_bytes
from diffrep.data.images import encode_png
from diffrep.diffusion.pipelines import Checkpoint
from diffrep.scan.layout import ScanLayout
from diffrep.scan.units import ScanUnit, read_given
from diffrep.search import LocalShards, RayShards, Searcher, open_index
from diffrep.search.regions import RegionSpec, embed_regions
from diffrep.search.training_regions import TrainingRegions

GENERATION_SCHEMA = pa.schema([
    ("gen_id", pa.string()), ("checkpoint", pa.string()), ("checkpoint_path", pa.string()),
    ("prompt_id", pa.int64()), ("prompt", pa.string()), ("source_key", pa.string()),
    ("source_id", pa.int64()), ("seed", pa.int64()), ("scheduler", pa.string()),
    ("steps", pa.int64()), ("guidance_scale", pa.float64()), ("resolution", pa.int64()),
    ("image_tar", pa.string()), ("image_member", pa.string()),
    ("top1_id", pa.int64()), ("top1_key", pa.string()), ("top1_sim", pa.float32()),
    ("source_sim", pa.float32()),
    ("match_ids", pa.list_(pa.int64())), ("match_keys", pa.list_(pa.string())),
    ("match_urls", pa.list_(pa.string())), ("match_captions", pa.list_(pa.string())),
    ("match_sims", pa.list_(pa.float32())),
    # object-level matching (diffrep.search.regions; null when scan.regions is off): the
    # training image with the best region score, that score, the whole generation's
    # similarity to the same image, and the region's box (x0, y0, x1, y1 in [0, 1])
    ("region_id", pa.int64()), ("region_key", pa.string()), ("region_sim", pa.float32()),
    # region_box: 4 floats, or null without regions (a variable-length list: parquet
    # cannot read back nulls of a fixed-size list)
    ("region_global_sim", pa.float32()), ("region_box", pa.list_(pa.float32())),
    # geometric verification of the region match (scan.region_verify; null when it did not
    # run for this generation): RANSAC inliers, and whether they verify it
    ("region_inliers", pa.int32()), ("region_verified", pa.bool_()),
])


@dataclass(frozen=True, kw_only=True)
class GenerationSettings:
    seeds_per_prompt: int = 1
    seed: int = 0
    scheduler: str | None = None
    steps: int = 50
    guidance_scale: float = 7.5
    #: image side, pixels; None in the run-wide settings: each checkpoint's own
    #: (diffrep.diffusion.native), set per checkpoint before generating
    resolution: int | None = None
    batch_size: int = 8
    device: str = "auto"
    pipeline_dtype: str = "auto"


@dataclass(frozen=True, kw_only=True)
class MatchSettings:
    model: str
    weights: str | None
    k: int = 5
    candidates: int = 50
    nprobe: int | None = None
    #: object-level matching's regions (RegionGrid.region_spec()); None: global only
    regions: RegionSpec | None = None
    #: region matches scoring above this are verified geometrically; None: none are
    verify_above: float | None = None
    #: read and write the root's region store (diffrep.search.region_store)
    region_store: bool = False

    def searcher(self, handle, backend, embedder) -> Searcher:
        """The searcher matches use: with region re-ranking, it reads and embeds the top
        candidates' training images (diffrep.search.training_regions)."""
        spec = self.regions
        return Searcher(handle, backend, self.nprobe,
                        candidate_regions=TrainingRegions.for_spec(handle, embedder, spec,
                                                                   self.region_store))


class ScanWorker:
    """One per actor. `checkpoint` None: the units hold already generated images."""

    def __init__(self, root: str, run: str, checkpoint: Checkpoint | None,
                 gen: GenerationSettings, match: MatchSettings, shard_actors: list | None = None):
        from diffrep.diffusion.pipelines import load_pipeline, resolve_device
        from diffrep.models import create_embedder

        self.layout = ScanLayout(root, run)
        self.checkpoint, self.gen, self.match = checkpoint, gen, match
        handle = open_index(root, match.model, verify_files="metadata" if shard_actors else True)
        backend = RayShards.from_actors(shard_actors, handle) if shard_actors else LocalShards(handle)
        device = resolve_device(gen.device)
        self.embedder = create_embedder(match.model, weights=match.weights, device=device)
        self.searcher = match.searcher(handle, backend, self.embedder)
        self.pipe = load_pipeline(checkpoint, device, gen.pipeline_dtype, gen.scheduler) if checkpoint else None

    def run(self, unit: ScanUnit) -> dict:
        """Process one unit; returns its stats (also written as the completion marker)."""
        t0 = time.monotonic()
        counts: Counter = Counter()
        tar_url = self.layout.images(unit.label, unit.unit)
        if self.pipe is not None:
            rows, images, t_gen = self._generate(unit)
        else:
            rows, images, t_gen = self._given(unit, counts)
        t1 = time.monotonic()
        samples = []
        for row, image in zip(rows, images, strict=True):
            row["image_tar"], row["image_member"] = tar_url, png_member(row["gen_id"])
            provenance = {k: row[k] for k in ("gen_id", "checkpoint", "prompt", "seed", "scheduler",
                                               "steps", "guidance_scale", "resolution")}
            samples.append((row["image_member"][:-4], {"png": encode_png(image),
                                                       "json": json.dumps(provenance).encode()}))
        self._match(rows, images)
        storage.write_bytes(tar_url, tar_bytes(samples))
        storage.write_parquet(self.layout.generations(unit.label, unit.unit),
                              pa.Table.from_pylist(rows, schema=GENERATION_SCHEMA))
        stats = {"label": unit.label, "unit": unit.unit, "generations": len(rows),
                 "skipped": {k: v for k, v in counts.items() if not k.startswith("note:")},
                 "notes": {k[5:]: v for k, v in counts.items() if k.startswith("note:")},
                 "seconds": {"generate": round(t_gen, 3),
                                                      "match": round(time.monotonic() - t1, 3),
                                                      "total": round(time.monotonic() - t0, 3)}}
        storage.write_json(self.layout.done(unit.label, unit.unit), stats)
        return stats

    def _generate(self, unit: ScanUnit):
        from diffrep.diffusion.generate import generate

        g, ckpt = self.gen, self.checkpoint
        scheduler = g.scheduler or type(self.pipe.scheduler).__name__
        rows = []
        for p in unit.prompts:
            for j in range(g.seeds_per_prompt):
                seed = g.seed + j
                rows.append({"gen_id": f"{unit.label}/{p['prompt_id']}/{seed}",
                             "checkpoint": ckpt.name, "checkpoint_path": ckpt.path,
                             "prompt_id": p["prompt_id"], "prompt": p["prompt"],
                             "source_key": p["source_key"], "source_id": p["source_id"],
                             "seed": seed, "scheduler": scheduler, "steps": g.steps,
                             "guidance_scale": g.guidance_scale, "resolution": g.resolution})
        t0 = time.monotonic()
        images = generate(self.pipe, [r["prompt"] for r in rows], [r["seed"] for r in rows],
                          g.steps, g.guidance_scale, g.resolution, g.batch_size)
        return rows, images, time.monotonic() - t0

    def _given(self, unit: ScanUnit, counts: Counter):
        given = read_given(unit, counts)
        rows = []
        for g in given:
            p = g.provenance
            rows.append({"gen_id": f"{unit.label}/{unit.unit}/{g.name}", "checkpoint": unit.label,
                         "checkpoint_path": None, "prompt_id": None, "prompt": g.prompt,
                         "source_key": p.get("source_key"), "source_id": None,
                         "seed": p.get("seed"), "scheduler": p.get("scheduler"),
                         "steps": p.get("steps"), "guidance_scale": p.get("guidance_scale"),
                         "resolution": g.image.width if g.image.width == g.image.height else None})
        if any(r["source_key"] for r in rows):
            ids = self.searcher.handle.key_to_id([r["source_key"] for r in rows if r["source_key"]])
            for r in rows:
                r["source_id"] = ids.get(r["source_key"])
        return rows, [g.image for g in given], 0.0

    def _match(self, rows: list[dict], images: list) -> None:
        """Top-k training matches (exact similarities) and the similarity to the prompt's
        own training image, into `rows`."""
        if not rows:
            return
        m, handle = self.match, self.searcher.handle
        spec = m.regions
        regions = embed_regions(self.embedder, images, spec) if spec else None
        vectors = regions.global_vectors if regions else self.embedder.embed_images(images)
        k = min(m.k, handle.ntotal)
        hits = self.searcher.search(vectors, k=k, rerank="exact", candidates=m.candidates)
        if regions is not None:
            self._match_regions(rows, vectors, regions)
            if m.verify_above is not None:
                self._verify_regions(rows, images, m.verify_above)
        meta = handle.lookup(hits.ids.ravel(), columns=["key", "url", "caption"]).to_pydict()
        with_source = [i for i, r in enumerate(rows) if r["source_id"] is not None]
        source_sims = {}
        if with_source:
            src = handle.vectors(np.array([rows[i]["source_id"] for i in with_source], np.int64))
            source_sims = dict(zip(with_source, np.einsum("nd,nd->n", vectors[with_source], src).tolist(),
                                   strict=True))
        for i, r in enumerate(rows):
            sl = slice(i * k, (i + 1) * k)
            r.update(match_ids=hits.ids[i].tolist(), match_keys=meta["key"][sl],
                     match_urls=meta["url"][sl], match_captions=meta["caption"][sl],
                     match_sims=hits.sims[i].tolist(), top1_id=int(hits.ids[i, 0]),
                     top1_key=meta["key"][i * k], top1_sim=float(hits.sims[i, 0]),
                     source_sim=source_sims.get(i))


    def _match_regions(self, rows: list[dict], vectors: np.ndarray, regions) -> None:
        """Best region score, its training image and box (diffrep.search.regions), into `rows`."""
        hits = self.searcher.search(vectors, k=1, rerank="exact", candidates=self.match.candidates,
                                    regions=regions)
        keys = self.searcher.handle.lookup(hits.ids[:, 0], columns=["key"])["key"].to_pylist()
        for i, r in enumerate(rows):
            if hits.ids[i, 0] >= 0:
                r.update(region_id=int(hits.ids[i, 0]), region_key=keys[i],
                         region_sim=float(hits.sims[i, 0]),
                         region_global_sim=float(hits.global_sims[i, 0]),
                         region_box=hits.boxes[i, 0].tolist())


    def _verify_regions(self, rows: list[dict], images: list, above: float) -> None:
        """Geometric verification (diffrep.search.geometry) of the region matches scoring
        above `above`: the generation's matched box against the training image."""
        from diffrep.search.geometry import verify_pair

        todo = [i for i, r in enumerate(rows) if r.get("region_sim") is not None and r["region_sim"] > above]
        if not todo:
            return
        train = self.searcher.handle.corpus_images([rows[i]["region_id"] for i in todo],
                                                   [rows[i]["region_key"] for i in todo])
        for i in todo:
            r = rows[i]
            if r["region_key"] in train:  # an unreadable training image stays unverified (null)
                v = verify_pair(images[i], train[r["region_key"]], query_box=r["region_box"])
                r.update(region_inliers=v.inliers, region_verified=v.verified)


def settings_dict(gen: GenerationSettings, match: MatchSettings) -> dict:
    return {"generation": asdict(gen), "match": asdict(match)}


def png_member(gen_id: str) -> str:
    """The tar member of a generation stored as PNG: its id made path-safe, with ".png"
    once (a given folder's "x.png" was stored as "x.png.png"; "x.jpg" stays "x.jpg.png",
    unique beside an "x.png")."""
    member = gen_id.replace("/", "_")
    return member if member.lower().endswith(".png") else member + ".png"
