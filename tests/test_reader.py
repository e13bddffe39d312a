"""The corrupted-input suite: every bad sample is skipped and counted by reason, good
ones survive, nothing is unpickled, keys cannot escape a path."""

import gzip
import io
import pickle
import struct
import zlib
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from diffrep.data.images import SkipSample, decode_image, to_rgb
from diffrep.data.reader import (
    UngroupedShardError,
    count_skip,
    decode_caption,
    iter_raw_samples,
    parse_sample,
    sanitize_key,
)
from tests.helpers import encode, photo, sample_members, write_tar


def read_all(path, max_pixels=50_000_000, grouped=True):
    counts, good = Counter(), []
    for raw in iter_raw_samples(str(path), counts, grouped=grouped):
        try:
            good.append(parse_sample(raw, counts, max_pixels))
        except SkipSample as skip:
            count_skip(counts, skip.reason)
    return good, counts


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels but carries almost no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def test_good_samples_keep_key_caption_url_and_row(tmp_path):
    members = sample_members("a", photo(1)) + sample_members("b", photo(2), "second", "https://u/b")
    good, counts = read_all(write_tar(tmp_path / "s.tar", members))
    assert [(s.key, s.row, s.caption) for s in good] == [("a", 0, "a caption"), ("b", 1, "second")]
    assert good[1].url == "https://u/b"
    assert not [k for k in counts if k.startswith("skip:") and counts[k]]


@pytest.mark.parametrize("case, members, reason", [
    ("not an image", [("k.jpg", b"this is text, not a jpeg")], "not_an_image"),
    ("empty member", [("k.jpg", b""), ("k.txt", b"cap")], "empty_member"),
    ("no image", [("k.txt", b"caption only"), ("k.json", b"{}")], "no_image"),
    ("truncated jpeg", [("k.jpg", encode(photo(3, (256, 256)))[:-400])], "corrupt_image"),
    ("gif is not allowed", [("k.jpg", encode(photo(4), "GIF"))], "not_an_image"),
    ("a gif member is named", [("k.gif", encode(photo(4), "GIF")), ("k.txt", b"cap")],
     "unsupported_format:gif"),
])
def test_bad_sample_is_skipped_and_counted(tmp_path, case, members, reason):
    members = sample_members("good0", photo(0)) + members + sample_members("good1", photo(1))
    good, counts = read_all(write_tar(tmp_path / "s.tar", members))
    assert [s.key for s in good] == ["good0", "good1"], case
    assert counts["skip:" + reason] == 1, (case, counts)


def test_decompression_bomb_is_refused_from_the_header(tmp_path):
    # 100k x 100k RGB would need 30 GB to decode; the header alone must refuse it.
    bomb = png_header_only(100_000, 100_000)
    good, counts = read_all(write_tar(tmp_path / "s.tar", [("k.png", bomb)] + sample_members("ok", photo(0))))
    assert counts["skip:decompression_bomb"] == 1 and [s.key for s in good] == ["ok"]
    # the limit is configurable: a 96x64 image is a bomb under a 1000-pixel limit
    _, counts = read_all(write_tar(tmp_path / "t.tar", sample_members("ok", photo(0))), max_pixels=1000)
    assert counts["skip:decompression_bomb"] == 1


def test_truncated_tar_keeps_samples_before_the_cut(tmp_path):
    members = []
    for i in range(6):
        members += sample_members(f"k{i}", photo(i, (128, 128)))
    path = write_tar(tmp_path / "s.tar", members)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    good, counts = read_all(path)
    assert 1 <= len(good) < 6
    assert [s.key for s in good] == [f"k{i}" for i in range(len(good))]
    assert counts["skip:truncated_tar"] == 1


def test_pickle_member_is_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    payload = pickle.dumps(Exploit())
    members = sample_members("k", photo(0)) + [("k.pyd", payload), ("k.pth", payload), ("k.pickle", payload)]
    good, counts = read_all(write_tar(tmp_path / "s.tar", members))
    assert [s.key for s in good] == ["k"]
    assert counts["ignored_member"] == 3
    assert not marker.exists()


def test_path_traversal_key_is_sanitised(tmp_path):
    members = sample_members("../../../etc/evil", photo(0)) + sample_members("c\\d:e f", photo(1))
    good, counts = read_all(write_tar(tmp_path / "s.tar", members))
    assert len(good) == 2
    for s in good:
        assert "/" not in s.key and "\\" not in s.key and ".." not in s.key and s.key
    assert counts["key_sanitised"] == 2
    assert sanitize_key("a" * 500) != sanitize_key("a" * 499 + "b")
    assert len(sanitize_key("a" * 500)) <= 160


def test_ungrouped_tar_does_not_split_samples(tmp_path):
    a, b = sample_members("a", photo(1), "cap a"), sample_members("b", photo(2), "cap b")
    # a.jpg, b.jpg, a.txt, b.txt, a.json, b.json: interleaved
    members = [m for pair in zip(a, b, strict=True) for m in pair]
    path = write_tar(tmp_path / "s.tar", members)
    with pytest.raises(UngroupedShardError):
        read_all(path, grouped=True)
    good, counts = read_all(path, grouped=False)
    assert [(s.key, s.caption) for s in good] == [("a", "cap a"), ("b", "cap b")]
    assert counts["ungrouped_shard"] == 1


def test_image_span_is_the_member_bytes_in_plain_tars_only(tmp_path):
    long_key = "b" * 150  # a name over 100 bytes: the member gets an extended (PAX) header first
    members = sample_members("a", photo(1)) + sample_members(long_key, photo(2))
    plain = write_tar(tmp_path / "s.tar", members)
    interleaved = write_tar(tmp_path / "u.tar", [members[i] for i in (0, 3, 1, 4, 2, 5)])
    raw = plain.read_bytes()
    for path, grouped in ((plain, True), (interleaved, False)):
        good, _ = read_all(path, grouped=grouped)
        data = path.read_bytes()
        for s in good:
            off, size = s.image_span
            assert data[off:off + size] == dict(members)[f"{s.key}.jpg"]
    gz = tmp_path / "s.tar.gz"
    gz.write_bytes(gzip.compress(raw))
    good, _ = read_all(gz)
    assert [s.key for s in good] == ["a", long_key] and {s.image_span for s in good} == {(-1, -1)}


def test_non_utf8_caption_is_repaired():
    text, repaired = decode_caption("café crème".encode("cp1252"))
    assert (text, repaired) == ("café crème", True)
    assert decode_caption("naïve".encode()) == ("naïve", False)
    assert decode_caption(b"a\x00b ") == ("ab", True)


def test_exif_orientation_is_applied():
    img = photo(0, (80, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    decoded = decode_image(encode(img, exif=exif.tobytes()))
    assert (decoded.width, decoded.height) == (40, 80)


def test_modes_become_rgb():
    rgb = decode_image(encode(photo(0).convert("CMYK"))).image
    assert rgb.mode == "RGB"
    # 16-bit greyscale is rescaled, not clipped: mid-grey stays mid-grey
    arr16 = np.full((8, 8), 32768, dtype=np.uint16)
    gray = decode_image(encode(Image.fromarray(arr16), "PNG")).image
    assert gray.mode == "RGB" and abs(int(np.asarray(gray)[0, 0, 0]) - 128) <= 1
    # palette with transparency and RGBA: transparent pixels become white
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    assert np.asarray(decode_image(encode(rgba, "PNG")).image)[0, 0].tolist() == [255, 255, 255]
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([0, 0, 0] * 256)
    buf = io.BytesIO()
    pal.save(buf, "PNG", transparency=0)
    assert np.asarray(decode_image(buf.getvalue()).image)[0, 0].tolist() == [255, 255, 255]


def test_unconvertible_mode_is_unreadable():
    with pytest.raises(SkipSample) as err:
        to_rgb(Image.new("La", (4, 4)))
    assert err.value.reason == "unreadable_mode"


def test_fsspec_urls_and_shard_patterns(tmp_path):
    import fsspec

    from diffrep.data.shards import check_shards, expand_shards, shard_id

    tar_bytes = write_tar(tmp_path / "00000.tar", sample_members("m", photo(9))).read_bytes()
    fs = fsspec.filesystem("memory")
    for i in range(3):
        fs.pipe(f"/bucket/shards/{i:05d}.tar", tar_bytes)
    urls = expand_shards("memory://bucket/shards/{00000..00002}.tar")
    assert [shard_id(u) for u in urls] == ["00000", "00001", "00002"]
    assert check_shards(urls) == []
    globbed = expand_shards("memory://bucket/shards/*.tar")
    assert [shard_id(u) for u in globbed] == ["00000", "00001", "00002"]
    assert check_shards(globbed) == []
    good, _ = read_all(urls[1])
    assert [s.key for s in good] == ["m"]
    errors = check_shards(expand_shards("memory://bucket/shards/{00002..00003}.tar"))
    assert errors == ["input shard memory://bucket/shards/00003.tar does not exist"]
    with pytest.raises(ValueError, match="cannot name an output file"):
        shard_id("memory://bucket/shards/bad name.tar")
