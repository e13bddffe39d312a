"""A folder of images as WebDataset shards, original bytes kept.

For users who do not start from LAION's parquet: every image file under a folder becomes
one sample `<key>.<ext>` (+ `.txt` caption, `.json` metadata), in shards `NNNNN.tar` that
the embed job reads unchanged.

- JPEG, PNG and WebP keep their original bytes (no re-encode, no resize). Transparency
  stays in the file; decoding flattens it over white (diffrep.data.images.to_rgb), the
  background every job sees.
- GIF (its first frame), BMP and TIFF are converted losslessly to PNG, counted under
  `converted:<format>`.
- A file that is not a readable image is skipped and counted under `skip:<reason>` with
  its path listed in the stats (`skip:not_an_image`, `skip:corrupt_image`,
  `skip:unsupported_format:<ext>` for other extensions).
- Captions: a sidecar `<name>.txt`, else a sidecar `<name>.json`'s `caption`, else the
  file name (`_` and `-` read as spaces).
- Keys are the relative path without extension, made path-safe (dots and separators as
  `_`); two files that would share a key get their extension appended. The same folder
  gives the same keys and shards on every run.

Memory: the file list (one relative path per image) and one image at a time; shards are
streamed to storage and appear atomically. Runs in one process (the work is file I/O).
"""

from __future__ import annotations

import io
import itertools
import json
import os
import re
import tarfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from diffrep import storage
from diffrep.data.images import DEFAULT_MAX_PIXELS, DecodedImage, SkipSample, decode_image
from diffrep.data.reader import MAX_KEY_CHARS, sanitize_key

KEPT_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
CONVERTED_FORMATS = ("GIF", "BMP", "TIFF")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
SIDECAR_SUFFIXES = {".txt", ".json"}
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class FolderImage:
    """One image file: its path relative to the folder and its sample key."""

    relpath: str
    key: str


def list_images(folder: Path, counts: Counter, skipped: list[str]) -> list[FolderImage]:
    """Every image file under `folder`, sorted by relative path, with unique keys. Files
    that are neither images nor sidecars are counted as `skip:unsupported_format:<ext>`."""
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                   if p.is_file() and not p.name.startswith("."))
    images: list[FolderImage] = []
    seen: set[str] = set()
    stems = Counter(os.path.splitext(f)[0] for f in files
                    if os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES)
    for rel in files:
        stem, suffix = os.path.splitext(rel)
        suffix = suffix.lower()
        if suffix in SIDECAR_SUFFIXES:
            continue
        if suffix not in IMAGE_SUFFIXES:
            counts[f"skip:unsupported_format:{suffix.lstrip('.') or 'none'}"] += 1
            skipped.append(rel)
            continue
        key = _key(stem if stems[stem] == 1 else f"{stem}_{suffix.lstrip('.')}")
        if key in seen:  # two paths made path-safe alike ("a b.png", "a_b.png")
            key = sanitize_key(f"{key}_{len(images)}")
        seen.add(key)
        images.append(FolderImage(rel, key))
    return images


def _key(stem: str) -> str:
    key = _KEY_UNSAFE.sub("_", stem).strip("_") or "_"
    return sanitize_key(key) if len(key) > MAX_KEY_CHARS else key


def image_member(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[str, bytes, dict]:
    """(extension, bytes to store, metadata) of one image file's bytes, or SkipSample.
    Kept formats are checked by decoding them exactly as the embed job will."""
    try:
        fmt = Image.open(io.BytesIO(data)).format
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise SkipSample("not_an_image", str(exc)) from None
    if fmt in KEPT_FORMATS:
        decoded = decode_image(data, max_pixels)
        return KEPT_FORMATS[fmt], data, {"width": decoded.width, "height": decoded.height,
                                         "original_format": fmt.lower(), "converted": False}
    if fmt not in CONVERTED_FORMATS:
        raise SkipSample(f"unsupported_format:{(fmt or 'unknown').lower()}")
    try:
        img = Image.open(io.BytesIO(data))
        if img.width * img.height > max_pixels:
            raise SkipSample("decompression_bomb", f"{img.width}x{img.height}")
        img.seek(0)  # a GIF's first frame
        frame = img.convert("RGBA" if _has_alpha(img) else "RGB")
    except (OSError, ValueError, EOFError) as exc:
        raise SkipSample("corrupt_image", str(exc)) from None
    buf = io.BytesIO()
    frame.save(buf, format="PNG")
    return "png", buf.getvalue(), {"width": frame.width, "height": frame.height,
                                   "original_format": fmt.lower(), "converted": True}


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info


def caption_of(folder: Path, relpath: str, counts: Counter) -> str:
    """The sidecar .txt, else the sidecar .json's `caption`, else the file name."""
    stem = folder / os.path.splitext(relpath)[0]
    txt, meta = stem.with_name(stem.name + ".txt"), stem.with_name(stem.name + ".json")
    if txt.is_file():
        counts["caption:txt"] += 1
        return txt.read_bytes().decode("utf-8", errors="replace").strip()
    if meta.is_file():
        try:
            caption = json.loads(meta.read_text(errors="replace")).get("caption")
        except (json.JSONDecodeError, AttributeError):
            caption = None
            counts["bad_json"] += 1
        if isinstance(caption, str):
            counts["caption:json"] += 1
            return caption.strip()
    counts["caption:file_name"] += 1
    return re.sub(r"[_\-]+", " ", stem.name).strip()


def samples(folder: Path, images: list[FolderImage], counts: Counter, skipped: list[str],
            max_pixels: int, records: list[dict] | None = None
            ) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, members) of every readable image, in order; the rest counted and listed.
    Each sample's metadata record (key, url, caption, source, size, format) is also
    appended to `records` when given."""
    for item in images:
        path = folder / item.relpath
        try:
            ext, data, meta = image_member(path.read_bytes(), max_pixels)
        except SkipSample as exc:
            counts[f"skip:{exc.reason}"] += 1
            skipped.append(item.relpath)
            continue
        if meta["converted"]:
            counts[f"converted:{meta['original_format']}"] += 1
        caption = caption_of(folder, item.relpath, counts)
        record = {"key": item.key, "url": path.resolve().as_uri(), "caption": caption,
                  "source": item.relpath, **meta}
        counts["images"] += 1
        if records is not None:
            records.append(record)
        yield item.key, {ext: data, "txt": caption.encode(), "json": json.dumps(record).encode()}


def write_shards(out_dir: str, shard_samples: Iterator[tuple[str, dict[str, bytes]]],
                 samples_per_shard: int, on_sample: Callable[[], None] | None = None) -> list[str]:
    """Stream samples into `out_dir/NNNNN.tar`, `samples_per_shard` each (members grouped
    by sample, mtime 0); each shard appears atomically when full. Returns their URLs."""
    urls: list[str] = []
    samples_left = iter(shard_samples)
    first = next(samples_left, None)
    while first is not None:
        urls.append(storage.join(out_dir, f"{len(urls):05d}.tar"))
        with storage.atomic_open(urls[-1]) as f, \
                tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for key, members in itertools.chain([first], itertools.islice(samples_left,
                                                                           samples_per_shard - 1)):
                for ext, data in members.items():
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size, info.mtime = len(data), 0
                    tar.addfile(info, io.BytesIO(data))
                if on_sample is not None:
                    on_sample()
        first = next(samples_left, None)
    return urls


def decode_any_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode JPEG/PNG/WebP as the embed job does, and GIF (first frame), BMP and TIFF
    through their lossless PNG conversion; raises SkipSample otherwise."""
    _ext, stored, _meta = image_member(data, max_pixels)
    return decode_image(stored, max_pixels)
