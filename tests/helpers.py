"""Building test inputs: tar shards member by member, encoded images."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image


def photo(seed: int = 0, size: tuple[int, int] = (96, 64)) -> Image.Image:
    """A smooth random RGB image (compresses like a photo, unlike white noise)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)


def encode(img: Image.Image, fmt: str = "JPEG", **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """Write a tar holding `members` (name, data) in the given order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def sample_members(key: str, img: Image.Image | bytes, caption: str | bytes = "a caption",
                   url: str | None = None) -> list[tuple[str, bytes]]:
    data = img if isinstance(img, bytes) else encode(img)
    cap = caption if isinstance(caption, bytes) else caption.encode()
    meta = f'{{"key": "{key}", "url": "{url or "https://x.invalid/" + key}"}}'.encode()
    return [(f"{key}.jpg", data), (f"{key}.txt", cap), (f"{key}.json", meta)]
