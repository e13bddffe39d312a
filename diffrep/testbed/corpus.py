"""The testbed's training set as a corpus every job reads unchanged: WebDataset shards of
model A's ("memorizing") distinct training images with their captions, and a scan prompt
file with each prompt's source key.

Model B ("large data") trained on every one of these images once (and on more), so
scanning A and B with the same prompts against this corpus is paper 1's Fig. 4
comparison: same images, repeated vs seen once. Images are stored as PNG (lossless), so
the verbatim labels compare generations with the exact training pixels.

Each image is one row, as in a deduplicated corpus; how often A saw it is in the
sample's json (`repeats`), with its design truth (`kind`, `memorized`).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from diffrep import storage
from diffrep.data.demo import tar_bytes
from diffrep.testbed import data as tdata

TESTBED_URL = "testbed://pool/{index:04d}"


def _png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    return buf.getvalue()


def write_testbed_corpus(testbed_dir: str | Path, memorizing_dir: str | Path, out_dir: str,
                         num_shards: int = 2, once_prompts: int = 20, seed: int = 0,
                         once_images: int | None = None) -> dict:
    """Write `out_dir`/shards/NNNNN.tar, metadata.parquet, prompts.parquet and (last)
    manifest.json; returns the manifest.

    The corpus holds the distinct images of the memorizing model's training set
    (`memorizing_dir`/testbed/truth.json, pool images from `testbed_dir`/data); with
    `once_images`, every memorized and template image but only that many once-seen ones
    (drawn with `seed`): a smaller corpus with every copy's source in it. The prompts are
    every memorized and template caption plus `once_prompts` once-seen captions drawn
    with `seed`, each with its image's key; with testbed v2, also its prompts that are not
    training captions (paraphrases, with the key of the image they reword; object prompts,
    with no key: they have no training image of their own).
    """
    images, entries = tdata.read_pool(Path(testbed_dir) / "data")
    truth = tdata.read_truth(Path(memorizing_dir) / "testbed")
    extra = [t for t in truth if t.get("repeats", 1) == 0]  # v2's prompts
    rows = sorted((t for t in truth if t.get("repeats", 1) > 0), key=lambda t: t["index"])
    once_rows = [t for t in rows if t["kind"] == "once"]
    if once_images is not None and once_images < len(once_rows):
        draw = np.random.default_rng(seed).choice(len(once_rows), once_images, replace=False)
        kept = {once_rows[int(i)]["index"] for i in draw}
        rows = [t for t in rows if t["kind"] != "once" or t["index"] in kept]
    per_shard = -(-len(rows) // num_shards)
    keys: dict[int, str] = {}
    shard_urls = []
    for s in range(num_shards):
        samples = []
        for j, t in enumerate(rows[s * per_shard:(s + 1) * per_shard]):
            key = f"{s:05d}{j:04d}"
            keys[t["index"]] = key
            meta = {"key": key, "url": TESTBED_URL.format(index=t["index"]),
                    "caption": t["caption"], "status": "success", "testbed_index": t["index"],
                    "kind": t["kind"], "repeats": t["repeats"], "memorized": t["memorized"],
                    "source_photo": entries[t["index"]]["source"]}
            samples.append((key, {"png": _png(images[t["index"]]), "txt": t["caption"].encode(),
                                  "json": json.dumps(meta).encode()}))
        url = storage.join(out_dir, "shards", f"{s:05d}.tar")
        storage.write_bytes(url, tar_bytes(samples))
        shard_urls.append(url)

    storage.write_parquet(storage.join(out_dir, "metadata.parquet"), pa.table({
        "key": [keys[t["index"]] for t in rows],
        "caption": [t["caption"] for t in rows],
        "kind": [t["kind"] for t in rows],
        "repeats": [t["repeats"] for t in rows],
        "memorized": [t["memorized"] for t in rows],
        "verbatim_type": [t["verbatim_type"] for t in rows],
    }))
    special = [t for t in rows if t["kind"] != "once"]
    once = [t for t in rows if t["kind"] == "once"]
    pick = np.random.default_rng(seed).choice(len(once), min(once_prompts, len(once)), replace=False)
    prompts = special + extra + [once[int(i)] for i in sorted(pick)]
    storage.write_parquet(storage.join(out_dir, "prompts.parquet"), pa.table({
        "prompt": [t["caption"] for t in prompts],
        "key": pa.array([keys.get(t["index"]) for t in prompts], pa.string()),
        "kind": [t["kind"] for t in prompts],
    }))
    manifest = {"testbed": str(testbed_dir), "memorizing": str(memorizing_dir),
                "num_shards": num_shards, "shards": shard_urls, "num_samples": len(rows),
                "num_prompts": len(prompts), "num_memorized_prompts": len(special) + len(extra),
                "seed": seed}
    storage.write_json(storage.join(out_dir, "manifest.json"), manifest)
    return manifest
