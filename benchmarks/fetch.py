"""Reading training images back by key (figures printed and written to JSON; not a test).

Every report, the search re-rank (diffrep.search.training_regions) and DCS labelling fetch
training images by key through diffrep.report.images.fetch_corpus_images. A LAION shard
is a ~10,000-image tar of a few hundred MB. On one LAION-shaped shard (JPEG crops of the
shipped photos, `--images` of them), k random keys are fetched three ways, in one run:

- ranged: the byte ranges the embed job recorded (one ranged read per image);
- streamed: one pass over the tar that stops once all k are found (embed outputs without
  ranges, compressed tars);
- full_pass: the whole tar read, as before ranges were recorded.

Best of `--repeats`; the page cache is warm for all three (local disk), so on an object
store the gap is wider: the bytes read are printed beside the times.

Run: python -m benchmarks.fetch --out bench-results/fetch.json
"""

from __future__ import annotations

import argparse
import io
import os
import random
import tarfile
import tempfile
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa

from benchmarks.common import write_results
from diffrep import storage
from diffrep.data.demo import load_source_photos
from diffrep.data.reader import iter_raw_samples, parse_sample
from diffrep.embed.layout import METADATA_SCHEMA, ModelOutput
from diffrep.report import images as fetch

MODEL = "sscd_onnx"


def write_shard(root: Path, n: int, side: int, seed: int) -> tuple[str, list[str]]:
    """A tar of `n` JPEG samples (random crops of the shipped photos, `side` px) and the
    embed metadata + stats that fetch_corpus_images reads (no embedding is needed)."""
    rng = random.Random(seed)
    photos = list(load_source_photos(False).values())
    tar_path = root / "shard.tar"
    with tarfile.open(tar_path, "w") as tar:
        for i in range(n):
            img = rng.choice(photos)
            w = min(img.width, img.height, rng.randint(side, 2 * side))
            x, y = rng.randint(0, img.width - w), rng.randint(0, img.height - w)
            buf = io.BytesIO()
            img.crop((x, y, x + w, y + w)).resize((side, side)).save(buf, "JPEG", quality=90)
            for ext, data in (("jpg", buf.getvalue()), ("txt", f"photo {i}".encode())):
                info = tarfile.TarInfo(f"{i:08d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    rows: dict[str, list] = {name: [] for name in METADATA_SCHEMA.names}
    for raw in iter_raw_samples(str(tar_path), Counter()):
        s = parse_sample(raw, Counter())
        for col, value in (("key", s.key), ("url", s.url), ("caption", s.caption), ("shard", "00000"),
                           ("row", s.row), ("width", s.image.width), ("height", s.image.height),
                           ("sha256", s.sha256), ("image_offset", s.image_span[0]),
                           ("image_size", s.image_span[1])):
            rows[col].append(value)
    out = ModelOutput(str(root), MODEL)
    storage.write_parquet(out.metadata("00000"), pa.table(rows, schema=METADATA_SCHEMA))
    storage.write_json(out.stats("00000"), {"shard": "00000", "input": str(tar_path)})
    return str(tar_path), rows["key"]


def best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def run(images: int, side: int, ks: list[int], repeats: int, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        tar, keys = write_shard(root, images, side, seed)
        tar_mb = os.path.getsize(tar) / 2**20
        print(f"shard: {images} images, {tar_mb:.0f} MB ({time.perf_counter() - t0:.0f} s to write)", flush=True)
        rng = random.Random(seed)
        out = {"images": images, "side_px": side, "tar_mb": round(tar_mb, 1), "repeats": repeats, "k": {}}
        print("| k | ranged s | streamed (early stop) s | full pass s | ranged MB read | full pass / ranged |")
        for k in ks:
            wanted = set(rng.sample(keys, k))
            got = fetch.fetch_corpus_images(str(root), MODEL, {"00000": wanted})
            assert set(got) == wanted, "ranged fetch lost images"
            ranged = best_of(lambda w=wanted: fetch.fetch_corpus_images(str(root), MODEL, {"00000": w}), repeats)
            streamed = best_of(lambda w=wanted: fetch.read_streamed_images(tar, w), repeats)
            full = best_of(lambda w=wanted: fetch.read_streamed_images(tar, w | {"not-a-key"}), repeats)
            read_mb = ranged_bytes(root, wanted) / 2**20
            out["k"][str(k)] = {"ranged_s": round(ranged, 4), "streamed_s": round(streamed, 4),
                                "full_pass_s": round(full, 4), "ranged_mb_read": round(read_mb, 3),
                                "full_over_ranged": round(full / ranged, 1)}
            print(f"| {k} | {ranged:.4f} | {streamed:.3f} | {full:.3f} | {read_mb:.2f} | {full / ranged:.0f}x |",
                  flush=True)
    return out


def ranged_bytes(root: Path, keys: set[str]) -> int:
    """Bytes the ranged fetch reads from the tar: the recorded sizes of `keys`."""
    import pyarrow.parquet as pq

    meta = pq.read_table(ModelOutput(str(root), MODEL).metadata("00000"), columns=["key", "image_size"],
                         filters=[("key", "in", sorted(keys))])
    return int(sum(meta["image_size"].to_pylist()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench-results/fetch.json")
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--side", type=int, default=384, help="image side in px (LAION's median is ~400)")
    parser.add_argument("--k", default="1,10,100")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    results = run(args.images, args.side, [int(k) for k in args.k.split(",")], args.repeats, args.seed)
    write_results(args.out, results)


if __name__ == "__main__":
    main()
