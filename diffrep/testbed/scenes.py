"""Testbed v2's scenes: one sampler, one renderer and one caption generator for every kind
of training image, so that a caption's wording says nothing about its kind.

A scene is a background mosaic (a 3x3 grid cut at random lines, each tile a crop of one
of the pip-installed photos, rotated by a multiple of 90 degrees) with object cut-outs
(diffrep.testbed.objects; the pool puts one in every scene) placed on it, maybe mirrored.
Scenes are drawn at 2x and box-filtered down to `side` pixels. Captions name the objects, where they are, how
big, and what the mosaic is made of; every attribute and the sentence have several
wordings, drawn from the caller's generator, so a second draw of one scene is a
paraphrase of it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from diffrep.testbed.objects import CutOut

PHOTO_WORDS = {  # the pip-installed photos (diffrep.data.demo.load_source_photos) in words
    "astronaut": "astronaut", "chelsea": "cat", "coffee": "coffee cup", "rocket": "rocket",
    "hubble_deep_field": "galaxies", "motorcycle_left": "motorcycle", "ihc": "stained tissue",
    "camera": "cameraman", "coins": "old coins", "moon": "moon", "brick": "brick wall",
    "grass": "grass", "gravel": "gravel", "retina": "retina", "cell": "cell",
    "clock_motion": "clock", "page": "printed page", "china": "temple", "flower": "flower",
}
MOSAIC = ("collage", "mosaic", "patchwork")
POSITIONS = {  # (row, col) of a 3x3 grid -> wordings
    (0, 0): ("top left", "upper left"), (0, 1): ("top", "upper middle"), (0, 2): ("top right", "upper right"),
    (1, 0): ("left", "left side"), (1, 1): ("centre", "middle"), (1, 2): ("right", "right side"),
    (2, 0): ("bottom left", "lower left"), (2, 1): ("bottom", "lower middle"), (2, 2): ("bottom right", "lower right")}
SIZES = ((0.45, ("small", "little")), (0.6, ("medium", "mid-sized")), (1.0, ("large", "big")))
TEMPLATES = ("{objects} on a {background}", "{background} with {objects}",
             "a picture of {objects} over a {background}", "{objects}; {background}")
SCALE = 2  # drawn at SCALE x side, then box-filtered down


@dataclass(frozen=True)
class Tile:
    """A mosaic tile's picture: photo name, square crop box (left, top, side) in the photo,
    quarter turns."""

    photo: str
    box: tuple[int, int, int]
    turns: int


@dataclass(frozen=True)
class Placement:
    """An object (index into the cut-out catalogue) with its centre (x, y) in [0, 1] of the
    image, its longer side as a fraction of the image side, and a mirror flag."""

    cutout: int
    centre: tuple[float, float]
    scale: float
    mirror: bool


@dataclass(frozen=True)
class Scene:
    """Cut lines of the 3x3 mosaic (two x, two y, in [0, 1]), its 9 tiles row by row, and
    the objects drawn on it in order."""

    cuts: tuple[float, float, float, float]
    tiles: tuple[Tile, ...]
    objects: tuple[Placement, ...]


def sample_tile(rng: np.random.Generator, photos: dict[str, Image.Image]) -> Tile:
    names = sorted(photos)
    name = names[int(rng.integers(len(names)))]
    w, h = photos[name].size
    side = int(rng.integers(24, max(25, min(w, h) // 2 + 1)))
    return Tile(name, (int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1)), side),
                int(rng.integers(4)))


def sample_placement(rng: np.random.Generator, cutout: int, scale: tuple[float, float] = (0.35, 0.7)
                     ) -> Placement:
    return Placement(cutout, (float(rng.uniform(0.2, 0.8)), float(rng.uniform(0.2, 0.8))),
                     float(rng.uniform(*scale)), bool(rng.random() < 0.5))


def sample_scene(rng: np.random.Generator, photos: dict[str, Image.Image], cutouts: list[int]) -> Scene:
    """A random mosaic with the given objects (cut-out indices) at random places."""
    xs = np.sort(rng.uniform(0.15, 0.85, 2))
    ys = np.sort(rng.uniform(0.15, 0.85, 2))
    return Scene((float(xs[0]), float(xs[1]), float(ys[0]), float(ys[1])),
                 tuple(sample_tile(rng, photos) for _ in range(9)),
                 tuple(sample_placement(rng, c) for c in cutouts))


def with_objects(scene: Scene, objects: tuple[Placement, ...]) -> Scene:
    return replace(scene, objects=objects)


def placement_box(p: Placement, cutout: CutOut, side: int) -> tuple[int, int, int, int]:
    """The object's box (left, top, right, bottom) in pixels of a side x side image,
    clipped to the image."""
    w, h = cutout.image.size
    k = p.scale * side / max(w, h)
    bw, bh = w * k, h * k
    left, top = p.centre[0] * side - bw / 2, p.centre[1] * side - bh / 2
    return (max(0, int(left)), max(0, int(top)), min(side, int(np.ceil(left + bw))),
            min(side, int(np.ceil(top + bh))))


def render(scene: Scene, side: int, photos: dict[str, Image.Image], cutouts: list[CutOut]) -> np.ndarray:
    """The scene as (side, side, 3) uint8."""
    size = side * SCALE
    canvas = Image.new("RGB", (size, size))
    xs = [0, round(scene.cuts[0] * size), round(scene.cuts[1] * size), size]
    ys = [0, round(scene.cuts[2] * size), round(scene.cuts[3] * size), size]
    for i, tile in enumerate(scene.tiles):
        r, c = divmod(i, 3)
        left, top, s = tile.box
        piece = photos[tile.photo].convert("RGB").crop((left, top, left + s, top + s))
        piece = piece.resize((size, size), Image.Resampling.BILINEAR).rotate(90 * tile.turns)
        box = (xs[c], ys[r], xs[c + 1], ys[r + 1])
        canvas.paste(piece.crop(box), box[:2])
    for p in scene.objects:
        img = cutouts[p.cutout].image
        if p.mirror:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        k = p.scale * size / max(img.size)
        img = img.resize((max(1, round(img.size[0] * k)), max(1, round(img.size[1] * k))),
                         Image.Resampling.LANCZOS)
        at = (round(p.centre[0] * size - img.size[0] / 2), round(p.centre[1] * size - img.size[1] / 2))
        canvas.paste(img, at, img)
    return np.asarray(canvas.resize((side, side), Image.Resampling.BOX), np.uint8)


def _pick(rng: np.random.Generator, words: tuple[str, ...]) -> str:
    return words[int(rng.integers(len(words)))]


def object_phrase(p: Placement, cutout: CutOut, rng: np.random.Generator) -> str:
    cell = (min(2, int(p.centre[1] * 3)), min(2, int(p.centre[0] * 3)))
    size = next(words for limit, words in SIZES if p.scale / 0.7 <= limit)
    # "a", not "an": the article precedes a size word, and every one of SIZES starts with a consonant
    article, adjective = _pick(rng, ("a", "one")), _pick(rng, size)  # drawn in this order
    where = "in the" if cell == (1, 1) else _pick(rng, ("at the", "on the"))
    return f"{article} {adjective} {cutout.name} {where} {_pick(rng, POSITIONS[cell])}"


def caption(scene: Scene, cutouts: list[CutOut], rng: np.random.Generator) -> str:
    """One wording of the scene; every word choice and the object order drawn from `rng`."""
    phrases = [object_phrase(p, cutouts[p.cutout], rng) for p in scene.objects]
    order = rng.permutation(len(phrases))
    objects = " and ".join(phrases[i] for i in order)
    # the mosaic in words: the photos of its two largest tiles
    xs = np.diff([0, *scene.cuts[:2], 1])
    ys = np.diff([0, *scene.cuts[2:], 1])
    area = np.outer(ys, xs).ravel()
    words = []
    for i in np.argsort(-area):
        w = PHOTO_WORDS.get(scene.tiles[i].photo, scene.tiles[i].photo.replace("_", " "))
        if w not in words:
            words.append(w)
        if len(words) == 2:
            break
    background = f"{_pick(rng, MOSAIC)} of {' and '.join(words)} photos"
    return _pick(rng, TEMPLATES).format(objects=objects, background=background)


def paraphrase(scene: Scene, cutouts: list[CutOut], rng: np.random.Generator, avoid: set[str],
               tries: int = 50) -> str:
    """A wording of the scene that is not in `avoid` (its training captions)."""
    for _ in range(tries):
        text = caption(scene, cutouts, rng)
        if text not in avoid:
            return text
    raise ValueError("no new wording of this scene in 50 draws")
