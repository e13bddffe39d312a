"""Synthetic copy sets (paper 1, sec. 4) from real photos.

The gallery holds `crops_per_photo` crops of every photo (grouped by photo: crops of one
photo are never negatives of each other). Each query copies one gallery item into, or
next to, content from a different photo:

- cutmix: a random square patch of the source pasted into another image;
- segmix: an irregular region of the source (generated blob or polygon mask), augmented
  (flip, blur, autocontrast, solarize, colour jitter), resized and pasted into another image;
- segmix_background: the background-kept variant: the source stays in place and the
  masked region is replaced by another image's content;
- diagonal_image / diagonal_noise: one triangular half of the source kept, the other
  replaced by another image, or by smooth noise that looks like inpainting;
- plain: two different plain edits in a row (crop, rescale, JPEG, colour, text overlay).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from diffrep.data.demo import TRANSFORMS

SETS = ("cutmix", "segmix", "segmix_background", "diagonal_image", "diagonal_noise", "plain")
PLAIN = ("crop", "resize", "jpeg", "color_jitter", "text_overlay")
SIZE = 256


@dataclass(frozen=True)
class GalleryItem:
    key: str
    group: str      # the photo it was cropped from
    image: Image.Image


@dataclass(frozen=True)
class Query:
    key: str
    set: str
    source_key: str
    image: Image.Image
    #: the gallery item whose content was mixed in (None for noise fills and plain edits)
    other_key: str | None = None


def make_gallery(photos: dict[str, Image.Image], crops_per_photo: int, seed: int) -> list[GalleryItem]:
    """`crops_per_photo` crops (70% of each side, at random places) of every photo,
    resized to SIZE x SIZE."""
    rng = random.Random(seed)
    items = []
    for name in sorted(photos):
        img = photos[name]
        for c in range(crops_per_photo):
            w, h = int(img.width * 0.7), int(img.height * 0.7)
            x, y = rng.randint(0, img.width - w), rng.randint(0, img.height - h)
            crop = img.crop((x, y, x + w, y + h)).resize((SIZE, SIZE), Image.Resampling.BICUBIC)
            items.append(GalleryItem(f"{name}__{c}", name, crop))
    return items


def blob_mask(rng: random.Random, size: int = SIZE) -> Image.Image:
    """An irregular region: a random polygon or thresholded smooth noise; 15-45% of the area."""
    if rng.random() < 0.5:
        cx, cy = rng.uniform(0.35, 0.65) * size, rng.uniform(0.35, 0.65) * size
        n = rng.randint(5, 12)
        angles = sorted(rng.uniform(0, 2 * np.pi) for _ in range(n))
        pts = [(cx + np.cos(a) * rng.uniform(0.2, 0.4) * size, cy + np.sin(a) * rng.uniform(0.2, 0.4) * size)
               for a in angles]
        mask = Image.new("L", (size, size), 0)
        ImageDraw.Draw(mask).polygon(pts, fill=255)
        return mask
    noise = np.random.default_rng(rng.randint(0, 2**31)).random((6, 6)).astype(np.float32)
    smooth = np.asarray(Image.fromarray((noise * 255).astype(np.uint8)).resize((size, size), Image.Resampling.BICUBIC),
                        np.float32)
    threshold = np.quantile(smooth, 1 - rng.uniform(0.15, 0.45))
    return Image.fromarray(((smooth >= threshold) * 255).astype(np.uint8))


def augment(img: Image.Image, rng: random.Random) -> Image.Image:
    """A random subset of flip, blur, autocontrast, solarize and colour jitter."""
    if rng.random() < 0.5:
        img = ImageOps.mirror(img)
    if rng.random() < 0.4:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.0)))
    if rng.random() < 0.4:
        img = ImageOps.autocontrast(img)
    if rng.random() < 0.2:
        img = ImageOps.solarize(img, threshold=rng.randint(160, 230))
    if rng.random() < 0.5:
        img = TRANSFORMS["color_jitter"](img, rng)
    return img


def cutmix(src: Image.Image, other: Image.Image, rng: random.Random) -> Image.Image:
    side = int(SIZE * rng.uniform(0.35, 0.6))
    x, y = rng.randint(0, SIZE - side), rng.randint(0, SIZE - side)
    patch = src.crop((x, y, x + side, y + side))
    out = other.copy()
    out.paste(patch, (rng.randint(0, SIZE - side), rng.randint(0, SIZE - side)))
    return out


def segmix(src: Image.Image, other: Image.Image, rng: random.Random) -> Image.Image:
    mask = blob_mask(rng)
    box = mask.getbbox() or (0, 0, SIZE, SIZE)
    region, region_mask = augment(src, rng).crop(box), mask.crop(box)
    scale = rng.uniform(0.6, 1.0)
    w, h = max(8, int(region.width * scale)), max(8, int(region.height * scale))
    region, region_mask = region.resize((w, h)), region_mask.resize((w, h))
    out = other.copy()
    out.paste(region, (rng.randint(0, SIZE - w), rng.randint(0, SIZE - h)), region_mask)
    return out


def segmix_background(src: Image.Image, other: Image.Image, rng: random.Random) -> Image.Image:
    out = src.copy()
    out.paste(other, (0, 0), blob_mask(rng))
    return out


def diagonal(src: Image.Image, fill: Image.Image, rng: random.Random) -> Image.Image:
    corners = [(0, 0), (SIZE, 0), (SIZE, SIZE), (0, SIZE)]
    k = rng.randint(0, 3)
    triangle = [corners[k], corners[(k + 1) % 4], corners[(k + 2) % 4]]
    mask = Image.new("L", (SIZE, SIZE), 0)
    ImageDraw.Draw(mask).polygon(triangle, fill=255)
    out = fill.copy()
    out.paste(src, (0, 0), mask)
    return out


def smooth_noise(rng: random.Random) -> Image.Image:
    """Low-frequency colour noise, blurred: the texture an inpainting model leaves."""
    cells = np.random.default_rng(rng.randint(0, 2**31)).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    img = Image.fromarray(cells).resize((SIZE, SIZE), Image.Resampling.BICUBIC)
    return img.filter(ImageFilter.GaussianBlur(6))


def make_queries(gallery: list[GalleryItem], set_name: str, seed: int) -> list[Query]:
    """One copy of every gallery item for `set_name`, mixed with a different photo."""
    if set_name not in SETS:
        raise ValueError(f"unknown copy set {set_name!r}; known: {', '.join(SETS)}")
    rng = random.Random(f"{seed}-{set_name}")
    out = []
    for item in gallery:
        other_item = rng.choice([g for g in gallery if g.group != item.group])
        other = other_item.image
        if set_name == "cutmix":
            img = cutmix(item.image, other, rng)
        elif set_name == "segmix":
            img = segmix(item.image, other, rng)
        elif set_name == "segmix_background":
            img = segmix_background(item.image, other, rng)
        elif set_name == "diagonal_image":
            img = diagonal(item.image, other, rng)
        elif set_name == "diagonal_noise":
            img = diagonal(item.image, smooth_noise(rng), rng)
        else:
            img = item.image
            for edit in rng.sample(PLAIN, 2):
                img = TRANSFORMS[edit](img, rng)
        mixed = set_name in ("cutmix", "segmix", "segmix_background", "diagonal_image")
        out.append(Query(f"{set_name}__{item.key}", set_name, item.key, img.convert("RGB"),
                         other_item.key if mixed else None))
    return out
