"""Fetching corpus images by key for reports: the embed stats name each shard's input tar."""

from __future__ import annotations

import io
import logging
import tarfile
from collections import Counter

from PIL import Image

from diffrep import storage
from diffrep.data.images import SkipSample, decode_image
from diffrep.data.reader import IMAGE_EXTS, iter_raw_samples
from diffrep.embed.layout import ModelOutput

log = logging.getLogger("diffrep")


def fetch_corpus_images(root: str, model: str, wanted: dict[str, set[str]]) -> dict[str, Image.Image]:
    """{key: image} for `wanted` = {embedding shard: keys}. Reads only those shards; an
    unreadable shard or image is logged and left out (the report shows it as missing)."""
    out: dict[str, Image.Image] = {}
    emb = ModelOutput(root, model)
    for shard, keys in sorted(wanted.items()):
        try:
            url = storage.read_json(emb.stats(shard))["input"]
            for raw in iter_raw_samples(url, Counter()):
                if raw.key in keys:
                    ext = next((e for e in IMAGE_EXTS if e in raw.members), None)
                    if ext:
                        out[raw.key] = decode_image(raw.members[ext]).image
        except (OSError, KeyError, SkipSample) as exc:
            log.warning("report: images of shard %s unavailable: %s", shard, exc)
    return out


def read_tar_images(url: str, names: set[str]) -> dict[str, Image.Image]:
    """{member name: RGB image} of the `names` members of a tar (e.g. a job's generated
    images); an unreadable tar or member is logged and left out."""
    out: dict[str, Image.Image] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(storage.read_bytes(url))) as tar:
            for member in tar.getmembers():
                if member.name in names:
                    out[member.name] = Image.open(tar.extractfile(member)).convert("RGB")
    except (OSError, tarfile.TarError) as exc:
        log.warning("report: images of %s unavailable: %s", url, exc)
    return out


def draw_box(image: Image.Image, box, colour: str = "#e02020") -> Image.Image:
    """A copy of `image` with the normalised box (x0, y0, x1, y1 in [0, 1]) outlined."""
    from PIL import ImageDraw

    out = image.convert("RGB")
    w, h = out.size
    x0, y0, x1, y1 = box
    width = max(2, round(max(w, h) / 75))
    ImageDraw.Draw(out).rectangle((x0 * w, y0 * h, x1 * w - 1, y1 * h - 1), outline=colour,
                                  width=width)
    return out
