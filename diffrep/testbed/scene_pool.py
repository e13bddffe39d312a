"""Testbed v2's pool: distinct scenes (diffrep.testbed.scenes) at `side` px, every caption
from one generator, and four kinds of memorization with their truth.

Every scene of every kind shows exactly one object, so a caption's structure (its number
of object phrases, hence its length) says nothing about its kind: the caption generator
and the scene sampler are the same for all. Kinds of training image (pool entries, in
this order):
- memorized (MV): `num_memorized` scenes, one caption each, repeated `memorized_repeats`
  times in model A's set;
- template (TV): one family, a fixed mosaic with an object that varies
  (`template_variants` different cut-outs at one place), each variant repeated
  `template_repeats` times; the varying object's box is the entry's box;
- object: one cut-out (the copied object) placed in `object_scenes` different mosaics,
  each scene seen `object_repeats` times; the copied object's box is the entry's box;
- once: distinct scenes with distinct captions, seen once. With an
  embedder (the build uses SSCD), a candidate scene whose descriptor is more than
  `max_similarity` cosine-similar to any scene already in the pool is redrawn with the
  next object: the pool's null is held below the scan's 0.5 by construction, and the
  number redrawn is reported.

Prompts that are not training captions (pool.json "prompts"), for the scans:
- paraphrase: `paraphrases` new wordings of each memorized scene (index: its image);
- object_prompt: `object_prompts` captions of new scenes with the copied object (index:
  -1, no training image; `cutout`: the copied object).

Model A ("memorizing"): memorized, template and object scenes (repeated) and once-seen
scenes up to `once_a` distinct images. Model B ("large data"): the memorized scenes once
each and once-seen scenes up to `once_b` distinct images; not the template and object
families, which are duplicated structures in themselves (16 scenes sharing a mosaic, 32
sharing an object) and would make B copy them. No object is used twice outside the
template family and the object kind, so unrelated scenes share no object.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np

from diffrep.testbed import scenes
from diffrep.testbed.objects import CutOut

log = logging.getLogger(__name__)


@dataclass
class ScenePoolConfig:
    """Sizes of testbed v2's pool and training sets (counts of images, repeats, prompts)."""

    seed: int = 0
    side: int = 64
    num_memorized: int = 12
    memorized_repeats: int = 64
    paraphrases: int = 2
    template_variants: int = 16
    template_repeats: int = 8
    object_scenes: int = 32
    object_repeats: int = 12
    object_prompts: int = 16
    once_a: int = 1500
    once_b: int = 4000
    max_similarity: float = 0.45  # with an embedder: a once-seen scene's cap on similarity

    def special(self) -> int:
        return self.num_memorized + self.template_variants + self.object_scenes


@dataclass
class SceneEntry:
    """One distinct training image: caption, the objects it shows (catalogue sources),
    kind, and a box (left, top, right, bottom; pixels) of what its kind copies (the whole
    image for memorized and once, the varying object for template, the copied object)."""

    index: int
    caption: str
    source: str
    kind: str
    box: tuple[int, int, int, int]


def _embed_arrays(embedder, images: list[np.ndarray]) -> np.ndarray:
    from PIL import Image

    return embedder.embed_images([Image.fromarray(im) for im in images])


def build_scene_pool(cfg: ScenePoolConfig, photos: dict, cutouts: list[CutOut], embedder=None,
                     batch_size: int = 64) -> tuple[np.ndarray, list[SceneEntry], list[dict], int]:
    """(images (N, side, side, 3) uint8, entries, prompts, once-seen candidates redrawn);
    deterministic in cfg.seed, the photos, the cut-out catalogue and the embedder. Raises
    ValueError when the catalogue runs out (one object per scene, redrawn ones included).
    Memory: the pool's descriptors, (N, dim) float32 (8 MB at 4,000 x 512)."""
    rng = np.random.default_rng(cfg.seed)
    n_once = max(cfg.once_a - cfg.special(), cfg.once_b - cfg.num_memorized)
    needed = cfg.num_memorized + n_once + cfg.template_variants + 1
    if len(cutouts) < needed:
        raise ValueError(f"{len(cutouts)} object cut-outs, the pool needs {needed}: install the "
                         "object packages (diffrep.testbed.objects) or lower once_b")
    order = [int(i) for i in rng.permutation(len(cutouts))]

    def take(n: int) -> list[int]:
        return [order.pop() for _ in range(n)]

    side = cfg.side
    images: list[np.ndarray] = []
    entries: list[SceneEntry] = []
    prompts: list[dict] = []
    captions: set[str] = set()

    def add(scene: scenes.Scene, kind: str, box: tuple[int, int, int, int] | None = None,
            image: np.ndarray | None = None) -> SceneEntry:
        for _ in range(50):  # captions are distinct: a rare repeat wording is redrawn
            text = scenes.caption(scene, cutouts, rng)
            if text not in captions:
                break
        captions.add(text)
        source = "+".join(cutouts[p.cutout].source for p in scene.objects)
        entry = SceneEntry(len(images), text, source, kind, box or (0, 0, side, side))
        images.append(scenes.render(scene, side, photos, cutouts) if image is None else image)
        entries.append(entry)
        return entry

    memorized = []
    for _ in range(cfg.num_memorized):
        scene = scenes.sample_scene(rng, photos, take(1))
        memorized.append((scene, add(scene, "memorized")))

    variants = take(cfg.template_variants)
    family = scenes.sample_scene(rng, photos, [])
    for v in variants:
        slot = scenes.Placement(v, (0.65, 0.5), 0.55, False)
        add(scenes.with_objects(family, (slot,)), "template", scenes.placement_box(slot, cutouts[v], side))

    copied = take(1)[0]

    def object_scene() -> tuple[scenes.Scene, tuple[int, int, int, int]]:
        scene = scenes.sample_scene(rng, photos, [copied])
        return scene, scenes.placement_box(scene.objects[0], cutouts[copied], side)

    for _ in range(cfg.object_scenes):
        scene, box = object_scene()
        add(scene, "object", box)

    redrawn = 0
    if embedder is not None:  # descriptors of the pool so far, filled in place
        pool_vectors = np.zeros((len(images) + n_once, embedder.dim), np.float32)
        pool_vectors[:len(images)] = _embed_arrays(embedder, images)
        filled = len(images)
    while sum(e.kind == "once" for e in entries) < n_once:
        want = n_once - sum(e.kind == "once" for e in entries)
        if len(order) < min(want, batch_size):
            raise ValueError(f"object catalogue exhausted: {want} once-seen scenes still to draw, "
                             f"{redrawn} redrawn above max_similarity {cfg.max_similarity}")
        batch = [scenes.sample_scene(rng, photos, take(1)) for _ in range(min(want, batch_size))]
        rendered = [scenes.render(sc, side, photos, cutouts) for sc in batch]
        vectors = _embed_arrays(embedder, rendered) if embedder is not None else None
        for j, (scene, image) in enumerate(zip(batch, rendered, strict=True)):
            if vectors is not None:
                if filled and float((pool_vectors[:filled] @ vectors[j]).max()) > cfg.max_similarity:
                    redrawn += 1
                    continue
                pool_vectors[filled] = vectors[j]
                filled += 1
            add(scene, "once", image=image)
        done = sum(e.kind == "once" for e in entries)
        if done // (10 * batch_size) != (done - len(batch)) // (10 * batch_size) or done == n_once:
            log.info("pool: %d/%d once-seen scenes, %d candidates redrawn", done, n_once, redrawn)

    for scene, entry in memorized:
        for _ in range(cfg.paraphrases):
            text = scenes.paraphrase(scene, cutouts, rng, captions)
            captions.add(text)
            prompts.append({"caption": text, "kind": "paraphrase", "index": entry.index,
                            "of": entry.caption})
    for _ in range(cfg.object_prompts):
        scene, box = object_scene()
        text = scenes.paraphrase(scene, cutouts, rng, captions)
        captions.add(text)
        prompts.append({"caption": text, "kind": "object_prompt", "index": -1,
                        "cutout": cutouts[copied].source, "box": list(box)})
    return np.stack(images), entries, prompts, redrawn


def training_rows(cfg: ScenePoolConfig, entries: list[SceneEntry], model: str) -> list[tuple[int, int]]:
    """(pool index, repeats) of model "A" or "B"'s training set."""
    repeats = {"memorized": cfg.memorized_repeats, "template": cfg.template_repeats,
               "object": cfg.object_repeats}
    special = [e for e in entries if e.kind != "once"]
    once = [e for e in entries if e.kind == "once"]
    if model == "A":
        return ([(e.index, repeats[e.kind]) for e in special]
                + [(e.index, 1) for e in once[: cfg.once_a - len(special)]])
    if model == "B":
        memorized = [e for e in special if e.kind == "memorized"]
        return [(e.index, 1) for e in memorized + once[: cfg.once_b - len(memorized)]]
    raise ValueError(f"model must be 'A' or 'B', not {model!r}")


VERBATIM = {"memorized": "MV", "template": "TV", "object": "object", "paraphrase": "MV"}


def truth_rows(entries: list[SceneEntry], rows: list[tuple[int, int]], model: str,
               prompts: list[dict] = ()) -> list[dict]:
    """The design truth of a model's captions and of the prompts (repeats 0): memorized
    (bool, A's designed copies) and the kind of copy (MV, TV, object, none)."""
    out = []
    for index, n in rows:
        e = entries[index]
        memorized = model == "A" and e.kind != "once"
        out.append({"caption": e.caption, "index": index, "kind": e.kind, "repeats": n,
                    "memorized": memorized, "verbatim_type": VERBATIM[e.kind] if memorized else "none",
                    "box": list(e.box)})
    for p in prompts:
        memorized = model == "A"
        out.append({"caption": p["caption"], "index": p["index"], "kind": p["kind"], "repeats": 0,
                    "memorized": memorized,
                    "verbatim_type": VERBATIM.get(p["kind"], "object") if memorized else "none",
                    "box": p.get("box")})
    return out


def config_dict(cfg: ScenePoolConfig) -> dict:
    return {"design": "scenes", **asdict(cfg)}
