"""Streaming WebDataset shards robustly.

A shard is a tar whose members are named `<key>.<ext>`; the members of one sample share a
key and (normally) sit next to each other. Only image (jpg, jpeg, png, webp), txt and json
members are read; every other member (pickles included: .pyd, .pth, .pickle) is skipped
without being read, and nothing is ever unpickled or extracted to disk.

Reading never raises on bad data: each unusable sample is counted by reason in the
`Counter` the caller passes, and the reader moves on.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import lzma
import posixpath
import re
import tarfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from diffrep import storage
from diffrep.data.images import DEFAULT_MAX_PIXELS, DecodedImage, SkipSample, decode_image

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
TEXT_EXTS = ("txt", "json")
OTHER_IMAGE_EXTS = frozenset({"gif", "bmp", "tif", "tiff", "avif", "heic", "jxl"})
READ_EXTS = frozenset(IMAGE_EXTS + TEXT_EXTS)
MAX_KEY_CHARS = 160

_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9_.-]")
_DOT_RUNS = re.compile(r"\.{2,}")


SKIP = "skip:"  # counter prefix of skip reasons; other counters are notes


def count_skip(counts: Counter, reason: str) -> None:
    counts[SKIP + reason] += 1


class UngroupedShardError(Exception):
    """A key reappeared after other keys: the tar's members are not grouped by sample."""


@dataclass
class RawSample:
    """One sample's members as bytes. `row` is its position in the shard (0-based, in
    order of first appearance, skipped samples included) and `key` is path-safe. `spans`:
    {ext: (offset, size)} in bytes of each member's data in the tar file, for a later
    ranged read (diffrep.report.images); empty when the tar is compressed (its offsets are
    not the file's)."""

    key: str
    row: int
    members: dict[str, bytes] = field(default_factory=dict)
    raw_key: str = ""
    spans: dict[str, tuple[int, int]] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)  # extensions of members not read


@dataclass
class Sample:
    """A decoded, usable sample."""

    key: str
    row: int
    url: str
    caption: str
    image: DecodedImage
    sha256: str
    #: the image member's (offset, size) in bytes in the tar file; (-1, -1): unknown
    image_span: tuple[int, int] = (-1, -1)


def sanitize_key(raw_key: str) -> str:
    """Make a sample key safe to use in any path or URL.

    Keeps letters, digits, '_', '-' and single dots; every other character (slashes,
    backslashes, NULs, spaces) and every run of dots becomes '_'. Long keys are cut and
    suffixed with a hash so that distinct keys stay distinct.
    """
    key = _DOT_RUNS.sub("_", _UNSAFE_KEY_CHARS.sub("_", raw_key)).strip(".")
    if len(key) > MAX_KEY_CHARS:
        digest = hashlib.sha256(raw_key.encode("utf-8", "surrogateescape")).hexdigest()[:16]
        key = f"{key[: MAX_KEY_CHARS - 17]}_{digest}"
    return key or "_"


def split_member_name(name: str) -> tuple[str, str]:
    """WebDataset's naming: the key is the path up to the first dot of the file name."""
    dirname, base = posixpath.split(name)
    stem, dot, ext = base.partition(".")
    return posixpath.join(dirname, stem) if dirname else stem, ext.lower() if dot else ""


def iter_raw_samples(url: str, counts: Counter, grouped: bool = True) -> Iterator[RawSample]:
    """Yield the samples of one tar shard, in order.

    grouped=True streams the tar once and raises `UngroupedShardError` if a key
    reappears after another key started; the caller then restarts with grouped=False,
    which indexes the whole tar first and reads members by key (slower, needs a
    seekable file: local or fsspec with range reads).
    Counters: `skip:truncated_tar` (1 for the sample cut off at the end), `ignored_member`
    (members of other types, never read), `non_file_member` (dirs, links, devices).
    """
    fs, path = storage.filesystem(url)
    with fs.open(path, "rb") as fileobj:
        if grouped:
            yield from _iter_streaming(fileobj, counts)
        else:
            yield from _iter_indexed(fileobj, counts)


def _iter_streaming(fileobj, counts: Counter) -> Iterator[RawSample]:
    current: RawSample | None = None
    finished: set[str] = set()
    row = 0
    try:
        with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
            plain = _is_plain(tar)
            for info in tar:
                if not info.isfile():
                    counts["non_file_member"] += 1
                    continue
                key, ext = split_member_name(info.name)
                if current is None or key != current.raw_key:
                    if key in finished:
                        raise UngroupedShardError(key)
                    if current is not None:
                        finished.add(current.raw_key)
                        yield current
                    current = RawSample(sanitize_key(key), row, raw_key=key)
                    row += 1
                _read_member(tar, info, ext, current, counts, plain)
    except (tarfile.TarError, EOFError, OSError):
        # Truncated or corrupt tar: everything before the break is kept; the sample that
        # was being read when it broke is dropped and counted.
        count_skip(counts, "truncated_tar")
        return
    if current is not None:
        yield current


def _iter_indexed(fileobj, counts: Counter) -> Iterator[RawSample]:
    counts["ungrouped_shard"] += 1
    try:
        tar = tarfile.open(fileobj=fileobj, mode="r:*")  # noqa: SIM115 - closed below
    except (tarfile.TarError, EOFError, OSError):
        count_skip(counts, "truncated_tar")
        return
    with tar:
        plain = _is_plain(tar)
        by_key: dict[str, list[tarfile.TarInfo]] = {}
        try:
            for info in tar:
                if not info.isfile():
                    counts["non_file_member"] += 1
                    continue
                by_key.setdefault(split_member_name(info.name)[0], []).append(info)
        except (tarfile.TarError, EOFError, OSError):
            # Members past the cut are lost; the headers read before it are kept.
            count_skip(counts, "truncated_tar")
        for row, (raw_key, infos) in enumerate(by_key.items()):
            sample = RawSample(sanitize_key(raw_key), row, raw_key=raw_key)
            try:
                for info in infos:
                    _read_member(tar, info, split_member_name(info.name)[1], sample, counts, plain)
            except (tarfile.TarError, EOFError, OSError):
                count_skip(counts, "truncated_tar")
                return
            yield sample


def _is_plain(tar: tarfile.TarFile) -> bool:
    """Whether member offsets are byte offsets in the file: an uncompressed tar. A stream
    ("r|*") knows its compression; an indexed tar ("r:*") is plain when read from the file
    object itself rather than through a decompressor."""
    comptype = getattr(tar.fileobj, "comptype", None)
    if comptype is not None:
        return comptype == "tar"
    return not isinstance(tar.fileobj, (gzip.GzipFile, bz2.BZ2File, lzma.LZMAFile))


def _read_member(tar: tarfile.TarFile, info: tarfile.TarInfo, ext: str, sample: RawSample,
                 counts: Counter, plain: bool = False) -> None:
    """Read one member into `sample` if it is an image/txt/json; never other types."""
    if ext not in READ_EXTS:
        counts["ignored_member"] += 1
        sample.ignored.append(ext)
        return
    if ext in sample.members:
        counts["duplicate_member"] += 1
        return
    member = tar.extractfile(info)
    sample.members[ext] = member.read() if member is not None else b""
    if plain and not info.sparse:
        sample.spans[ext] = (info.offset_data, info.size)


def decode_caption(data: bytes) -> tuple[str, bool]:
    """Decode caption bytes; returns (text, repaired). Non-UTF-8 bytes are read as
    Windows-1252 (the usual culprit in web captions), else with replacement chars."""
    try:
        text, repaired = data.decode("utf-8"), False
    except UnicodeDecodeError:
        try:
            text = data.decode("cp1252")
        except UnicodeDecodeError:
            text = data.decode("utf-8", errors="replace")
        repaired = True
    cleaned = text.replace("\x00", "").strip()
    return cleaned, repaired or cleaned != text.strip()


def parse_sample(raw: RawSample, counts: Counter, max_pixels: int = DEFAULT_MAX_PIXELS) -> Sample:
    """Decode a raw sample's image, caption and url, or raise `SkipSample`.

    Skip reasons beyond `decode_image`'s: `unsupported_format:<ext>` (no readable image
    member, but one of another image format, e.g. gif: `diffrep shards` converts those),
    `no_image` (no image member at all).
    Counted, not skipped: `caption_repaired`, `bad_json`, `key_sanitised`.
    """
    image_ext = next((e for e in IMAGE_EXTS if e in raw.members), None)
    if image_ext is None:
        other = next((e for e in raw.ignored if e in OTHER_IMAGE_EXTS), None)
        if other is not None:
            raise SkipSample(f"unsupported_format:{other}", "convert it with `diffrep shards`")
        raise SkipSample("no_image", f"members: {sorted(raw.members)}")
    data = raw.members[image_ext]
    image = decode_image(data, max_pixels=max_pixels)
    meta: dict = {}
    if "json" in raw.members:
        try:
            loaded = json.loads(decode_caption(raw.members["json"])[0] or "{}")
            meta = loaded if isinstance(loaded, dict) else {}
        except json.JSONDecodeError:
            counts["bad_json"] += 1
    caption = ""
    if "txt" in raw.members:
        caption, repaired = decode_caption(raw.members["txt"])
        counts["caption_repaired"] += int(repaired)
    elif isinstance(meta.get("caption"), str):
        caption = meta["caption"]
    url = meta.get("url") if isinstance(meta.get("url"), str) else ""
    counts["key_sanitised"] += int(raw.key != raw.raw_key)
    return Sample(raw.key, raw.row, url, caption, image, hashlib.sha256(data).hexdigest(),
                  raw.spans.get(image_ext, (-1, -1)))
