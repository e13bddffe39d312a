"""The testbed's null (a benchmark, not a test): how often a training image's nearest
other training image is above SSCD 0.5, the scan's baseline (paper 1's threshold assumes
unrelated training images sit far below it). Pools side by side: testbed v1 (32x32 crops
of 19 photos) and v2 (64x64 photo mosaics with object cut-outs).

Per pool: every distinct image is embedded with the real SSCD (sscd_onnx); its top-1 is
the largest cosine similarity to any other image of the set (exact, all pairs). Sets: the
whole pool (model B's distinct training images) and, where trained, model A's. Figures
printed and written to JSON; the issue's goal is at most 5% above 0.5.

Run: python -m benchmarks.testbed_null --pools testbed,testbed/v2 --out bench-results/testbed-null.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.common import write_results
from diffrep.models import create_embedder, default_weights
from diffrep.testbed import data as tdata


def top1(vectors: np.ndarray, block: int = 2048) -> np.ndarray:
    """Each row's largest cosine similarity to another row (rows L2-normalised)."""
    out = np.empty(len(vectors), np.float32)
    for i in range(0, len(vectors), block):
        sims = vectors[i:i + block] @ vectors.T
        sims[np.arange(len(sims)), np.arange(i, i + len(sims))] = -1
        out[i:i + block] = sims.max(1)
    return out


def summary(values: np.ndarray, threshold: float) -> dict:
    return {"images": len(values), "share_above": float(np.mean(values > threshold)),
            "median": float(np.median(values)), "p95": float(np.percentile(values, 95)),
            "max": float(values.max())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pools", default="testbed,testbed/v2", help="testbed folders, comma-separated")
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    embedder = create_embedder("sscd_onnx", weights=default_weights("sscd_onnx"), device="cpu")
    results: dict = {"threshold": args.threshold, "pools": {}}
    for folder in args.pools.split(","):
        root = Path(folder)
        if not (root / "data" / "pool.json").exists():
            print(f"{folder}: no pool (data/pool.json), skipped", file=sys.stderr)
            continue
        images, entries = tdata.read_pool(root / "data")
        design = json.loads((root / "data" / "pool.json").read_text())["config"].get("design", "crops")
        t0 = time.time()
        vectors = np.concatenate([embedder.embed_images([Image.fromarray(im) for im in images[i:i + 256]])
                                  for i in range(0, len(images), 256)])
        seconds = time.time() - t0
        pool = {"design": design, "side": int(images.shape[1]), "embed_seconds": seconds,
                "sets": {"pool (model B)": summary(top1(vectors), args.threshold)}}
        truth = root / "memorizing" / "testbed" / "truth.json"
        if truth.exists():
            own = sorted({t["index"] for t in tdata.read_truth(truth.parent) if t["repeats"] > 0})
            pool["sets"]["model A"] = summary(top1(vectors[own]), args.threshold)
        for name, s in pool["sets"].items():
            print(f"{folder} ({design}, {pool['side']} px) {name}: {s['images']} images, "
                  f"{100 * s['share_above']:.1f}% above {args.threshold}, median {s['median']:.3f}, "
                  f"p95 {s['p95']:.3f}, max {s['max']:.3f}")
        results["pools"][folder] = pool
    write_results(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
