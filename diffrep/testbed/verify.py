"""Check that the testbed's models copy what they were designed to: generate (DDIM) from
each model's captions and compare every generation with its caption's own training image
(pixel RMS, 256x256 in [0, 1] as in diffrep.rank.verbatim; SSCD cosine similarity), then
label it MV / RV / TV / none with diffrep.rank.verbatim.judge against the model's own
training set (RV: the 5 nearest training images by pixel RMS; TV: the template family's
first image with its stable mask, the pixels that do not vary across the family)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from diffrep.progress import Progress
from diffrep.rank import verbatim
from diffrep.testbed import data as tdata

log = logging.getLogger(__name__)


def load_pipeline(model_dir: str | Path, threads: int | None = 1):
    """A testbed StableDiffusionPipeline on CPU (float32), loaded as every checkpoint is
    (diffrep.diffusion.pipelines.load_pipeline: safetensors only)."""
    import torch

    from diffrep.diffusion.pipelines import Checkpoint
    from diffrep.diffusion.pipelines import load_pipeline as load_checkpoint

    if threads:
        torch.set_num_threads(threads)
    pipe = load_checkpoint(Checkpoint(str(model_dir), str(model_dir)), "cpu", "float32")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe, captions: Sequence[str], seeds: Sequence[int], steps: int,
             guidance_scale: float, batch_size: int = 64) -> np.ndarray:
    """(N, J, side, side, 3) float32 images in [0, 1] (side: the pipeline's, 32 for v1
    and 64 for v2): one per caption and seed; seed j's
    initial noise is the same for every caption (one torch.Generator per image, so an
    image does not depend on its batch). (caption, seed) pairs go `batch_size` per call."""
    import torch

    pairs = [(c, int(s)) for c in captions for s in seeds]
    side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    flat = np.zeros((len(pairs), side, side, 3), np.float32)
    progress = Progress("verify_testbed: generating", -(-len(pairs) // batch_size), unit="batches")
    for b in range(0, len(pairs), batch_size):
        chunk = pairs[b:b + batch_size]
        gens = [torch.Generator("cpu").manual_seed(s) for _, s in chunk]
        with torch.inference_mode():
            imgs = pipe([c for c, _ in chunk], num_inference_steps=steps,
                        guidance_scale=guidance_scale, generator=gens, output_type="np").images
        flat[b:b + len(chunk)] = imgs
        progress.update(len(chunk))
        progress.report()
    return flat.reshape(len(captions), len(seeds), side, side, 3)


def template_reference(images: np.ndarray, entries: list[dict], tolerance: float = 0.1
                       ) -> tuple[np.ndarray, np.ndarray] | None:
    """(first image of the template family as a unit image, its stable mask)."""
    family = [verbatim.to_unit(images[e["index"]].astype(np.float32) / 255)
              for e in entries if e["kind"] == "template"]
    if len(family) < 2:
        return None
    return family[0], verbatim.stable_mask(family, tolerance)


def nearest_training(gen: np.ndarray, train_images: np.ndarray, k: int) -> np.ndarray:
    """Indices (into train_images) of the k nearest by pixel RMS to any of the J
    generations `gen` (J, side, side, 3) in [0, 1]."""
    flat = train_images.reshape(len(train_images), -1).astype(np.float32) / 255
    g = gen.reshape(len(gen), -1)
    d = (g ** 2).sum(1)[:, None] + (flat ** 2).sum(1)[None] - 2 * g @ flat.T
    return np.argsort(d.min(0))[:k]


def sscd_similarity(embedder, generations: np.ndarray, own: np.ndarray) -> np.ndarray:
    """(N, J) cosine similarity of SSCD descriptors of each generation and its own image."""
    from PIL import Image

    n, j = generations.shape[:2]
    gen_imgs = [Image.fromarray((g * 255).round().astype(np.uint8))
                for g in generations.reshape(n * j, *generations.shape[2:])]
    own_imgs = [Image.fromarray(o) for o in own]
    eg = embedder.embed_images(gen_imgs).reshape(n, j, -1)
    eo = embedder.embed_images(own_imgs)
    return np.einsum("njd,nd->nj", eg, eo)


def object_references(embedder, images: np.ndarray, entries: list[dict]) -> np.ndarray | None:
    """SSCD descriptors (K, dim) of the copied object as it appears in the object kind's
    training scenes (each scene cropped to the object's box); None without that kind."""
    from PIL import Image

    crops = [Image.fromarray(images[e["index"]]).crop(tuple(e["box"])) for e in entries if e["kind"] == "object"]
    return embedder.embed_images(crops) if crops else None


def object_similarity(embedder, generations: np.ndarray, references: np.ndarray,
                      batch_size: int = 32) -> np.ndarray:
    """(N, J): the best cosine similarity between any region of a generation (the default
    regions: grid and segment proposals) and any reference crop of the copied object.
    Generations are embedded `batch_size` at a time, with progress."""
    from PIL import Image

    from diffrep.search.regions import RegionSpec, embed_regions

    n, j = generations.shape[:2]
    flat = generations.reshape(n * j, *generations.shape[2:])
    best = np.zeros(n * j, np.float32)
    progress = Progress("verify_testbed: object regions", -(-len(flat) // batch_size), unit="batches")
    for b in range(0, len(flat), batch_size):
        imgs = [Image.fromarray((g * 255).round().astype(np.uint8)) for g in flat[b:b + batch_size]]
        regions = embed_regions(embedder, imgs, RegionSpec()).vectors  # (b, R, dim), blank crops 0
        best[b:b + len(imgs)] = (regions @ references.T).max(axis=(1, 2))
        progress.update(len(imgs))
        progress.report()
    return best.reshape(n, j)


def verify_model(model_dir: str | Path, captions: list[dict], images: np.ndarray,
                 entries: list[dict], train_indices: np.ndarray, seeds: Sequence[int],
                 steps: int, guidance_scale: float, embedder=None, delta: float = 0.12,
                 sscd_kinds: Sequence[str] | None = None, object_regions: bool = True) -> list[dict]:
    """One row per caption (dicts of testbed truth rows, with pool `index`): min RMS to its
    own image over the J generations, SSCD similarity (max over J; None without an
    embedder or for kinds not in `sscd_kinds` when given), and the verbatim label against
    `train_indices` (the model's training set). A caption with no image of its own (v2's
    object prompts, index -1) gets None for those. With an embedder and a pool with the
    object kind (v2) and `object_regions`, `object_sim`: the best region-to-object
    similarity over the J generations (object_similarity), for every caption."""
    pipe = load_pipeline(model_dir)
    log.info("verify_testbed: %s: %d captions x %d seeds, %d steps", model_dir, len(captions),
             len(seeds), steps)
    gens = generate(pipe, [c["caption"] for c in captions], seeds, steps, guidance_scale)
    own = images[[max(c["index"], 0) for c in captions]]
    sims: list[float | None] = [None] * len(captions)
    objects: list[float | None] = [None] * len(captions)
    if embedder is not None:
        log.info("verify_testbed: SSCD of %d generations against their own images%s", gens.shape[0] * gens.shape[1],
                 " and the copied objects" if object_regions and any(e["kind"] == "object" for e in entries)
                 else "")
        refs = object_references(embedder, images, entries) if object_regions else None
        if refs is not None:
            objects = [float(v) for v in object_similarity(embedder, gens, refs).max(1)]
        sel = [i for i, c in enumerate(captions) if (sscd_kinds is None or c["kind"] in sscd_kinds)
               and c["index"] >= 0]
        if sel:
            for i, v in zip(sel, sscd_similarity(embedder, gens[sel], own[sel]).max(1), strict=True):
                sims[i] = float(v)
    template = template_reference(images, entries)
    train_images = images[train_indices]
    rows = []
    for i, c in enumerate(captions):
        if c["index"] < 0:
            rows.append({**c, "label": None, "rms_own": None, "rms_neighbour": None,
                         "rms_template": None, "sscd_own": None, "object_sim": objects[i]})
            continue
        units = [verbatim.to_unit(g) for g in gens[i]]
        nn = nearest_training(gens[i], train_images, 5)
        neighbours = [verbatim.to_unit(train_images[n].astype(np.float32) / 255) for n in nn
                      if train_indices[n] != c["index"]]
        v = verbatim.judge(units, [verbatim.to_unit(own[i].astype(np.float32) / 255)],
                           neighbours, [template] if template is not None else [], delta, delta)
        rows.append({**c, "label": v.label, "rms_own": v.matching_distance,
                     "rms_neighbour": v.retrieval_distance, "rms_template": v.template_distance,
                     "sscd_own": sims[i], "object_sim": objects[i]})
    return rows


def summarize(rows: list[dict], sscd_threshold: float = 0.5) -> dict:
    """Per caption kind: count, share with SSCD > threshold, label counts, median RMS."""
    out: dict = {}
    for kind in sorted({r["kind"] for r in rows}):
        sel = [r for r in rows if r["kind"] == kind]
        sims = [r["sscd_own"] for r in sel if r["sscd_own"] is not None]
        rms = [r["rms_own"] for r in sel if r["rms_own"] is not None]
        objects = [r["object_sim"] for r in sel if r.get("object_sim") is not None]
        out[kind] = {
            "captions": len(sel),
            "sscd_above": (float(np.mean([s > sscd_threshold for s in sims])) if sims else None),
            "sscd_median": float(np.median(sims)) if sims else None,
            "rms_own_median": float(np.median(rms)) if rms else None,
            "object_above": float(np.mean([o > sscd_threshold for o in objects])) if objects else None,
            "object_median": float(np.median(objects)) if objects else None,
            "labels": {lab: sum(r["label"] == lab for r in sel) for lab in verbatim.LABELS},
        }
    return out


def caption_sample(truth: list[dict], once: int, seed: int = 0) -> list[dict]:
    """Every caption of a designed kind (memorized, template, object; v2's paraphrase and
    object prompts) plus `once` once-seen ones (seeded sample)."""
    special = [t for t in truth if t["kind"] != "once"]
    rest = [t for t in truth if t["kind"] == "once"]
    pick = np.random.default_rng(seed).permutation(len(rest))[:once]
    return special + [rest[i] for i in sorted(pick)]


def model_training_indices(model_dir: str | Path) -> np.ndarray:
    """Pool indices of a model's training set (from its testbed/truth.json; v2's prompts,
    which are not training captions, have repeats 0 and are left out)."""
    return np.array([t["index"] for t in tdata.read_truth(Path(model_dir) / "testbed")
                     if t.get("repeats", 1) > 0], np.int64)
