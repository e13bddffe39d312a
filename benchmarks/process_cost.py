"""What a process pays before its work (a benchmark, not a test; figures printed and written
to JSON): the peak RSS and seconds of importing torch on top of what an index job needs
(numpy, pyarrow, faiss, diffrep's index and dedup jobs), each in a fresh subprocess, and
the images/s of the two SSCD ONNX exports on this machine's CPUs (320x320, batches of 32).

Run: python -m benchmarks.process_cost --out benchmarks/results/process-cost.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np

from benchmarks.common import write_results

PROBE = """
import json, resource, sys, time
t0 = time.perf_counter()
import numpy, pyarrow, faiss, jobs.build_index, jobs.dedup, jobs.search
base_s = time.perf_counter() - t0
base_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
torch_loaded = "torch" in sys.modules
t0 = time.perf_counter()
import torch
torch_s = time.perf_counter() - t0
print(json.dumps({"index_jobs_import_s": round(base_s, 3), "index_jobs_peak_rss_mb": round(base_mb, 1),
                  "torch_loaded_by_index_jobs": torch_loaded, "torch_import_s": round(torch_s, 3),
                  "torch_adds_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base_mb, 1)}))
"""


def import_cost(repeats: int) -> list[dict]:
    """PROBE in `repeats` fresh interpreters."""
    return [json.loads(subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                                      check=True).stdout.strip().splitlines()[-1])
            for _ in range(repeats)]


def sscd_rates(images: int) -> dict:
    """images/s of each SSCD ONNX export, `images` random 200x200 images in batches of 32."""
    from PIL import Image

    from diffrep.models import create_embedder

    rng = np.random.default_rng(0)
    imgs = [Image.fromarray(rng.integers(0, 255, (200, 200, 3), np.uint8)) for _ in range(images)]
    out = {}
    for name in ("sscd_onnx", "sscd_distilled_onnx"):
        emb = create_embedder(name, device="cpu")
        emb.embed_images(imgs[:4])  # warm-up
        t0 = time.perf_counter()
        emb.embed_images(imgs, batch_size=32)
        out[name] = round(images / (time.perf_counter() - t0), 1)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    runs = import_cost(args.repeats)
    write_results(args.out, {"settings": vars(args), "import_runs": runs,
                             "median": {k: float(np.median([r[k] for r in runs])) for k in runs[0]
                                        if k != "torch_loaded_by_index_jobs"},
                             "sscd_images_per_s": sscd_rates(args.images)})


if __name__ == "__main__":
    main()
