"""Thumbnails for the pages: training images by index id (one ranged read of the corpus tar,
diffrep.report.images) and job-written images by (tar, member) inside the root, resized to
JPEG, optionally with a box drawn, and cached on disk under <root>/serve_cache/thumbs/.

Memory: one image at a time. The cache holds one small JPEG per (image, size, box) asked
for, so it grows with what people look at, not with the corpus; delete the folder to
empty it.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

from diffrep.report.images import draw_box
from diffrep.serve.catalog import Catalog, NotFound

SIZES = (96, 160, 320)  # the thumbnail sides (px) the app renders


def parse_box(text: str | None) -> tuple[float, float, float, float] | None:
    """'x0,y0,x1,y1' in [0, 1] (a region match's normalised box) or None; raises ValueError."""
    if not text:
        return None
    box = tuple(float(v) for v in text.split(","))
    if len(box) != 4 or not all(0 <= v <= 1 for v in box) or box[0] >= box[2] or box[1] >= box[3]:
        raise ValueError(f"box must be x0,y0,x1,y1 with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1, not {text!r}")
    return box


def jpeg(image: Image.Image, size: int, box=None) -> bytes:
    img = draw_box(image, box) if box is not None else image.convert("RGB")
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


class Thumbnails:
    """Thumbnails of one root; `indexes` = {index folder: opened IndexHandle}."""

    def __init__(self, catalog: Catalog, indexes: dict):
        self.catalog, self.indexes = catalog, indexes
        self.cache = catalog.root / "serve_cache" / "thumbs"

    def _cached(self, parts: tuple, make) -> bytes:
        name = hashlib.sha256(repr(parts).encode()).hexdigest()[:32] + ".jpg"
        path = self.cache / name[:2] / name
        if path.is_file():
            return path.read_bytes()
        data = make()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{name}.tmp-{uuid.uuid4().hex}")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # atomic: a reader sees the whole file or none
        return data

    def training(self, index: str, image_id: int, size: int, box=None) -> bytes:
        """The training image `image_id` of index folder `index`."""
        handle = self.indexes.get(index)
        if handle is None:
            raise NotFound(f"no index {index!r}")
        if not 0 <= image_id < handle.ntotal:
            raise NotFound(f"no image {image_id} in index {index!r} ({handle.ntotal} images)")

        def make() -> bytes:
            images = handle.corpus_images(np.array([image_id]))
            if not images:
                raise NotFound(f"the corpus image of id {image_id} is unreadable (see the log)")
            return jpeg(next(iter(images.values())), size, box)

        return self._cached(("train", index, image_id, size, box), make)

    def member(self, tar: str, member: str, size: int, box=None) -> bytes:
        """Image `member` of the tar `tar` (root-relative or absolute, inside the root)."""
        path: Path = self.catalog.inside(tar)

        def make() -> bytes:
            try:
                with tarfile.open(path) as archive:
                    info = archive.getmember(member)
                    if not info.isfile():
                        raise NotFound(f"{member} is not a file in {tar}")
                    data = archive.extractfile(info).read()
            except (KeyError, FileNotFoundError) as exc:
                raise NotFound(f"no image {member!r} in {tar}") from exc
            from diffrep.data.images import decode_image

            return jpeg(decode_image(data).image, size, box)

        return self._cached(("member", str(path), path.stat().st_mtime_ns, member, size, box), make)
