"""The embedded default: a small LAION-like corpus built from photos that ship with
installed packages, with planted near-duplicates whose ground truth is recorded.

Layout written under `out_dir`:
  shards/NNNNN.tar        WebDataset shards (<key>.jpg, <key>.txt, <key>.json), like img2dataset
  metadata.parquet        key, url, caption of every good sample (LAION's parquet shape)
  duplicates.parquet      key, source_key, transform: each planted near-duplicate
  manifest.json           sources used, counts, expected skips; written last
"""

from __future__ import annotations

import io
import json
import random
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

from diffrep import storage

OPENCV_DOC_DATA = Path("/usr/share/doc/opencv-doc/examples/data")
# One photo per scene: stereo pairs and sequences (leuvenB, aero3, ...) would be
# unplanted near-duplicates and blur the ground truth.
SKIMAGE_PHOTOS = (
    "astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "motorcycle_left",
    "ihc", "camera", "coins", "moon", "brick", "grass", "gravel", "retina", "cell",
    "clock_motion", "page",
)
OPENCV_PHOTOS = (
    "HappyFish.jpg", "apple.jpg", "baboon.jpg", "building.jpg", "butterfly.jpg",
    "fruits.jpg", "home.jpg", "messi5.jpg", "orange.jpg", "squirrel_cls.jpg",
    "starry_night.jpg", "aero1.jpg", "graf1.png", "smarties.png", "board.jpg",
    "chicky_512.png", "basketball1.png", "rubberwhale1.png", "leuvenA.jpg",
    "Blender_Suzanne1.jpg", "stuff.jpg", "box_in_scene.png", "ela_original.jpg",
)
MAX_SIDE = 512
DEMO_URL = "https://demo.diffrep.invalid/{name}.jpg"


def load_source_photos(use_opencv_doc: bool = True) -> dict[str, Image.Image]:
    """Real photos from scikit-image, scikit-learn and (when installed) opencv-doc,
    as RGB images with the long side at most 512 px, keyed by a short name."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    photos: dict[str, Image.Image] = {}
    for name in SKIMAGE_PHOTOS:
        path = Path(skimage.data.__file__).parent / f"{name}.png"
        if not path.exists():
            path = path.with_suffix(".jpg")
        if path.exists():
            photos[name] = Image.open(path)
    sample = load_sample_images()
    for filename, array in zip(sample.filenames, sample.images, strict=True):
        photos[Path(filename).stem] = Image.fromarray(array)
    if use_opencv_doc and OPENCV_DOC_DATA.is_dir():
        for filename in OPENCV_PHOTOS:
            path = OPENCV_DOC_DATA / filename
            if path.exists():
                photos[f"cv_{Path(filename).stem}"] = Image.open(path)
    out = {}
    for name, img in photos.items():
        img = img.convert("RGB")
        img.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
        out[name] = img
    return out


def _resize(img: Image.Image, rng: random.Random) -> Image.Image:
    scale = rng.uniform(0.45, 0.7)
    return img.resize((max(32, int(img.width * scale)), max(32, int(img.height * scale))),
                      Image.Resampling.BICUBIC)


def _crop(img: Image.Image, rng: random.Random) -> Image.Image:
    frac = rng.uniform(0.8, 0.9)
    w, h = int(img.width * frac), int(img.height * frac)
    x, y = rng.randint(0, img.width - w), rng.randint(0, img.height - h)
    return img.crop((x, y, x + w, y + h))


def _jpeg(img: Image.Image, rng: random.Random) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=rng.randint(15, 30))
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _color_jitter(img: Image.Image, rng: random.Random) -> Image.Image:
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.75, 1.25))
    img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.75, 1.25))
    return ImageEnhance.Color(img).enhance(rng.uniform(0.6, 1.4))


def _flip(img: Image.Image, rng: random.Random) -> Image.Image:
    return ImageOps.mirror(img)


def _text_overlay(img: Image.Image, rng: random.Random) -> Image.Image:
    out = img.copy()
    draw = ImageDraw.Draw(out)
    size = max(12, img.height // 10)
    font = ImageFont.load_default(size=size)
    text = rng.choice(["SALE -50%", "© stock photo", "diffrep demo", "watermark"])
    draw.text((img.width // 20, img.height - size * 2), text, fill=(255, 255, 255), font=font,
              stroke_width=2, stroke_fill=(0, 0, 0))
    return out


TRANSFORMS: dict[str, Callable[[Image.Image, random.Random], Image.Image]] = {
    "resize": _resize,
    "crop": _crop,
    "jpeg": _jpeg,
    "color_jitter": _color_jitter,
    "flip": _flip,
    "text_overlay": _text_overlay,
}


@dataclass
class DemoItem:
    key: str
    name: str
    caption: str
    image_bytes: bytes
    width: int
    height: int


def _encode_jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def build_demo_corpus(
    out_dir: str,
    num_shards: int = 4,
    duplicates_per_source: float = 1.0,
    seed: int = 0,
    use_opencv_doc: bool = True,
    bad_samples: bool = True,
) -> dict:
    """Write the demo corpus under `out_dir` (see module docstring); returns the manifest.

    Every source photo is a distinct training image; `duplicates_per_source` planted
    near-duplicates per source on average (each one transform from TRANSFORMS, in turn)
    join it. Half of the planted copies keep their source's caption (multimodal
    duplicates, paper 2 Fig. 4), half get a new one. With `bad_samples`, the last shard
    also holds samples that the embed job must skip and count: a truncated JPEG
    (`corrupt_image`) and a caption with no image (`no_image`).
    """
    rng = random.Random(seed)
    photos = load_source_photos(use_opencv_doc)
    if not photos:
        raise RuntimeError("no demo photos found: install scikit-image and scikit-learn")
    names = sorted(photos)
    items: list[tuple[str, Image.Image, str, str | None, str | None]] = []
    for name in names:
        caption = f"a photo of {name.replace('cv_', '').replace('_', ' ')}"
        items.append((name, photos[name], caption, None, None))
    transforms = list(TRANSFORMS)
    n_dups = round(len(names) * duplicates_per_source)
    for i in range(n_dups):
        src = names[i % len(names)]
        transform = transforms[i % len(transforms)]
        img = TRANSFORMS[transform](photos[src], rng)
        base_caption = items[names.index(src)][2]
        caption = base_caption if i % 2 == 0 else f"{base_caption}, {transform} #{i}"
        items.append((f"{src}__dup{i}_{transform}", img, caption, src, transform))
    rng.shuffle(items)

    per_shard = -(-len(items) // num_shards)
    name_to_key: dict[str, str] = {}
    shards: list[list[DemoItem]] = []
    for s in range(num_shards):
        chunk = items[s * per_shard : (s + 1) * per_shard]
        shard_items = []
        for j, (name, img, caption, _src, _t) in enumerate(chunk):
            key = f"{s:05d}{j:04d}"
            name_to_key[name] = key
            shard_items.append(DemoItem(key, name, caption, _encode_jpeg(img), img.width, img.height))
        shards.append(shard_items)

    shard_dir = storage.join(out_dir, "shards")
    for s, shard_items in enumerate(shards):
        extra = _bad_samples(s, len(shard_items)) if bad_samples and s == num_shards - 1 else []
        storage.write_bytes(storage.join(shard_dir, f"{s:05d}.tar"), _tar_bytes(shard_items, extra))

    good = [it for shard in shards for it in shard]
    storage.write_parquet(storage.join(out_dir, "metadata.parquet"), pa.table({
        "key": [it.key for it in good],
        "url": [DEMO_URL.format(name=it.name) for it in good],
        "caption": [it.caption for it in good],
    }))
    dups = [(name_to_key[n], name_to_key[src], t) for n, _, _, src, t in items if src is not None]
    storage.write_parquet(storage.join(out_dir, "duplicates.parquet"), pa.table({
        "key": [d[0] for d in dups], "source_key": [d[1] for d in dups],
        "transform": [d[2] for d in dups],
    }))
    manifest = {
        "seed": seed,
        "num_shards": num_shards,
        "shards": [storage.join(shard_dir, f"{s:05d}.tar") for s in range(num_shards)],
        "sources": names,
        "num_sources": len(names),
        "num_good_samples": len(good),
        "num_planted_duplicates": len(dups),
        "expected_skips": {"corrupt_image": 1, "no_image": 1} if bad_samples else {},
    }
    storage.write_json(storage.join(out_dir, "manifest.json"), manifest)
    return manifest


def _bad_samples(shard: int, start: int) -> list[tuple[str, dict[str, bytes]]]:
    noise = np.random.default_rng(shard).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    whole = _encode_jpeg(Image.fromarray(noise))
    return [  # cut mid-scan: the header parses, the pixel data does not
        (f"{shard:05d}{start:04d}", {"jpg": whole[: len(whole) // 2], "txt": b"a truncated jpeg"}),
        (f"{shard:05d}{start + 1:04d}", {"txt": b"a caption whose image failed to download"}),
    ]


def _tar_bytes(items: list[DemoItem], extra: list[tuple[str, dict[str, bytes]]]) -> bytes:
    samples = []
    for it in items:
        meta = {"key": it.key, "url": DEMO_URL.format(name=it.name), "caption": it.caption,
                "width": it.width, "height": it.height, "status": "success"}
        samples.append((it.key, {"jpg": it.image_bytes, "txt": it.caption.encode(),
                                 "json": json.dumps(meta).encode()}))
    return tar_bytes(samples + list(extra))


def tar_bytes(samples: list[tuple[str, dict[str, bytes]]]) -> bytes:
    """A WebDataset tar: members <key>.<ext> grouped by sample, in order, mtime 0."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for key, members in samples:
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                info.mtime = 0
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
