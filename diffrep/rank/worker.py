"""The ranking worker (a Ray actor, GPU on a cluster): holds the pipeline; scores caption
shards (DCS + noise magnitude in one UNet row per caption), and labels the top of the
ranking (ECS, full generations, verbatim ground truth against the training set)."""

from __future__ import annotations

import io
import json
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from diffrep import storage
from diffrep.data.demo import tar_bytes
from diffrep.diffusion.pipelines import Checkpoint
from diffrep.rank import verbatim


@dataclass(frozen=True)
class ScoreSettings:
    guidance_scale: float = 7.5
    seed: int = 0
    resolution: int = 512
    batch_size: int = 64
    device: str = "auto"
    dtype: str = "auto"


@dataclass(frozen=True)
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
        self.pipe = load_pipeline(checkpoint, self.device, score.dtype)
        self.den = Denoiser(self.pipe, score.guidance_scale, score.seed)
        self._matcher = None

    def ready(self) -> bool:
        return True

    def score_shard(self, captions_url: str, out_url: str) -> dict:
        """Score one caption shard into `out_url` (written atomically: it is the marker)."""
        t0 = time.monotonic()
        table = pq.read_table(captions_url, columns=["caption_id", "caption", "images",
                                                     "duplication", "keys"])
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
            if self.truth.dedup_groups and storage.exists(self.truth.dedup_groups):
                groups = pq.read_table(self.truth.dedup_groups, columns=["key", "group_id"])
            self._matcher = (Searcher(handle), embedder, groups)
        return self._matcher

    def truth_chunk(self, rows: list[dict], out_url: str, tar_url: str) -> dict:
        """ECS, J generations and the verbatim label of each caption in `rows` (dicts with
        caption_id, caption, keys, shards, rank); writes the chunk's parquet (last) and tar."""
        from diffrep.diffusion.generate import generate
        from diffrep.diffusion.scores import edge_consistency, one_step_images, sobel_edges
        from diffrep.report.images import fetch_corpus_images

        t, s = self.truth, self.score
        searcher, embedder, groups = self._index()
        handle = searcher.handle
        captions = [r["caption"] for r in rows]
        ecs = []
        for i in range(0, len(captions), s.batch_size):
            imgs = one_step_images(self.den, captions[i:i + s.batch_size], s.resolution,
                                   [s.seed + j for j in range(t.ecs_seeds)])
            ecs.extend(edge_consistency(sobel_edges(im, t.edge_threshold), t.gamma) for im in imgs)
        seeds = [s.seed + j for j in range(t.gt_seeds)]
        gens = generate(self.pipe, [c for c in captions for _ in seeds], seeds * len(captions),
                        t.gt_steps, s.guidance_scale, s.resolution, s.batch_size)
        hits = searcher.search(embedder.embed_images(gens), k=min(t.neighbours, handle.ntotal),
                               rerank="exact", candidates=max(50, t.neighbours))
        meta = handle.lookup(hits.ids.ravel())
        neighbour_keys = np.array(meta["key"].to_pylist(), dtype=object).reshape(hits.ids.shape)
        # template groups: each neighbour's near-duplicate group (dedup job), else its own
        # nearest neighbours in the index
        members: dict[int, list[int]] = {}
        uniq = np.unique(hits.ids[hits.ids >= 0])
        if groups is not None:
            keys = handle.lookup(uniq)["key"]
            gid = pc.take(groups["group_id"], pc.index_in(keys, value_set=groups["key"]))
            for nid, g in zip(uniq.tolist(), gid.to_pylist(), strict=True):
                mk = groups.filter(pc.equal(groups["group_id"], g))["key"].to_pylist() if g is not None else []
                members[nid] = [nid] + [v for k, v in handle.key_to_id(mk).items() if v != nid]
        else:
            nn = searcher.search(handle.vectors(uniq), k=min(t.neighbours, handle.ntotal),
                                 rerank="exact", candidates=max(50, t.neighbours))
            for nid, ids in zip(uniq.tolist(), nn.ids, strict=True):
                members[nid] = [nid] + [int(x) for x in ids if x >= 0 and x != nid]
        wanted: dict[str, set[str]] = {}
        for r in rows:
            for k, sh in zip(r["keys"], r["shards"], strict=True):
                wanted.setdefault(sh, set()).add(k)
        all_ids = sorted({m for ms in members.values() for m in ms})
        id_key = dict(zip(all_ids, handle.lookup(np.array(all_ids, np.int64))["key"].to_pylist(), strict=True))
        for shard, _, sel in handle.locate(np.array(all_ids, np.int64)):
            wanted.setdefault(shard, set()).update(id_key[all_ids[i]] for i in sel)
        corpus = {k: verbatim.to_unit(im) for k, im in
                  fetch_corpus_images(self.root, t.model, wanted).items()}
        counts: Counter = Counter()
        out_rows, samples = [], []
        for i, r in enumerate(rows):
            g_unit = [verbatim.to_unit(gens[i * len(seeds) + j]) for j in range(len(seeds))]
            own = [corpus[k] for k in r["keys"] if k in corpus]
            qrows = range(i * len(seeds), (i + 1) * len(seeds))
            nbr_ids = sorted({int(x) for q in qrows for x in hits.ids[q] if x >= 0})
            neighbours = [corpus[id_key[n]] for n in nbr_ids if id_key.get(n) in corpus]
            templates, template_keys = [], []
            for n in nbr_ids:
                group = [corpus[id_key[m]] for m in members.get(n, [n]) if id_key.get(m) in corpus]
                if len(group) > 1:
                    templates.append((group[0], verbatim.stable_mask(group, t.template_tolerance)))
                    template_keys.append(id_key[n])
            verdicts = [verbatim.judge(g_unit, o, [], [], t.delta_v, t.delta) for o in own] or \
                [verbatim.judge(g_unit, None, [], [], t.delta_v, t.delta)]
            best_own = min((v.matching_distance for v in verdicts if v.matching_distance is not None),
                           default=None)
            v = verbatim.judge(g_unit, None, neighbours, templates, t.delta_v, t.delta)
            label = "MV" if best_own is not None and best_own <= t.delta_v else v.label
            counts[label] += 1
            if not own:
                counts["own_image_unavailable"] += 1
            names = []
            for j, seed in enumerate(seeds):
                buf = io.BytesIO()
                gens[i * len(seeds) + j].save(buf, format="PNG")
                name = f"{r['caption_id']}_{seed}"
                samples.append((name, {"png": buf.getvalue(), "json": json.dumps(
                    {"caption_id": r["caption_id"], "caption": r["caption"], "seed": seed}).encode()}))
                names.append(name + ".png")
            best_t = None
            if templates:
                dists = [min(verbatim.rms_distance(g, im, m) for g in g_unit) for im, m in templates]
                best_t = int(np.argmin(dists))
                buf = io.BytesIO()
                Image.fromarray(templates[best_t][1].astype(np.uint8) * 255).save(buf, format="PNG")
                samples.append((f"{r['caption_id']}_mask", {"png": buf.getvalue()}))
            best_q = min(qrows, key=lambda q: -hits.sims[q, 0])
            out_rows.append({
                "caption_id": r["caption_id"], "caption": r["caption"], "dcs_rank": r["rank"],
                "dcs": r["dcs"], "noise_magnitude": r["noise_magnitude"], "ecs": ecs[i],
                "label": label, "matching_distance": best_own,
                "retrieval_distance": v.retrieval_distance, "template_distance": v.template_distance,
                "top_neighbour_key": neighbour_keys[best_q, 0], "top_neighbour_sim": float(hits.sims[best_q, 0]),
                "template_key": template_keys[best_t] if best_t is not None else None,
                "template_mask": f"{r['caption_id']}_mask.png" if best_t is not None else None,
                "own_keys": r["keys"], "images": names, "image_tar": tar_url})
        storage.write_bytes(tar_url, tar_bytes(samples))
        storage.write_parquet(out_url, pa.Table.from_pylist(out_rows))
        return {"captions": len(rows), "labels": dict(counts)}
