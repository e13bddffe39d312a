"""Fetching corpus images by key (for reports, the search re-rank, DCS labelling): the
embed stats name each shard's input tar, and its metadata the byte range of each image.

Memory and I/O: only the wanted images are held. An image whose range the embed job
recorded (an uncompressed tar) is one ranged read, checked against its sha256; the others
(compressed tars, outputs of older versions, a tar changed since it was embedded) come
from one streamed pass over their tar, which stops once they are all found.
"""

from __future__ import annotations

import hashlib
import io
import logging
import tarfile
from collections import Counter
from contextlib import closing

import pyarrow as pa
from PIL import Image

from diffrep import storage
from diffrep.data.images import SkipSample, decode_image
from diffrep.data.reader import IMAGE_EXTS, iter_raw_samples
from diffrep.embed.layout import ModelOutput

log = logging.getLogger("diffrep")


def fetch_corpus_images(root: str, model: str, wanted: dict[str, set[str]]) -> dict[str, Image.Image]:
    """{key: RGB image} for `wanted` = {embedding shard: keys}. Reads only those shards; an
    unreadable shard or image is logged and left out (the report shows it as missing)."""
    out: dict[str, Image.Image] = {}
    emb = ModelOutput(root, model)
    for shard, keys in sorted(wanted.items()):
        try:
            url = storage.read_json(emb.stats(shard))["input"]
            try:
                ranged = read_ranged_images(url, emb.metadata(shard), keys)
            except (OSError, ValueError, pa.ArrowException) as exc:
                log.warning("report: ranged reads of shard %s failed (%s); streaming its tar", shard, exc)
                ranged = {}
            out.update(ranged)
            if len(ranged) < len(keys):
                out.update(read_streamed_images(url, set(keys) - ranged.keys()))
        except (OSError, KeyError) as exc:
            log.warning("report: images of shard %s unavailable: %s", shard, exc)
    return out


def read_ranged_images(url: str, metadata_url: str, keys: set[str]) -> dict[str, Image.Image]:
    """{key: image} of the `keys` whose byte range in the tar `url` the metadata records
    and whose bytes there still hash to the recorded sha256; the others are left out."""
    if not keys or "image_offset" not in storage.read_schema(metadata_url).names:
        return {}
    meta = storage.read_table(metadata_url, columns=["key", "sha256", "image_offset", "image_size"],
                         filters=[("key", "in", sorted(keys)), ("image_offset", ">=", 0)])
    if not meta.num_rows:
        return {}
    rows = meta.to_pylist()
    fs, path = storage.filesystem(url)
    blobs = fs.cat_ranges([path] * len(rows), [r["image_offset"] for r in rows],
                          [r["image_offset"] + r["image_size"] for r in rows])
    out, stale = {}, 0
    for r, data in zip(rows, blobs, strict=True):
        if hashlib.sha256(data).hexdigest() != r["sha256"]:
            stale += 1
            continue
        try:
            out[r["key"]] = decode_image(data).image
        except SkipSample as exc:
            log.warning("report: image %s of %s unreadable: %s", r["key"], url, exc)
    if stale:
        log.warning("report: %d image range(s) of %s do not match the embedded bytes (the tar "
                    "changed?); reading them by streaming the tar", stale, url)
    return out


def read_streamed_images(url: str, keys: set[str]) -> dict[str, Image.Image]:
    """{key: image} of `keys` from one pass over the tar `url`, stopped once all are found."""
    out: dict[str, Image.Image] = {}
    with closing(iter_raw_samples(url, Counter())) as samples:
        for raw in samples:
            if raw.key not in keys:
                continue
            ext = next((e for e in IMAGE_EXTS if e in raw.members), None)
            if ext:
                try:
                    out[raw.key] = decode_image(raw.members[ext]).image
                except SkipSample as exc:
                    log.warning("report: image %s of %s unreadable: %s", raw.key, url, exc)
            if len(out) == len(keys):
                break
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
