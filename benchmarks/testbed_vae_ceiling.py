"""How high SSCD can a testbed model's copy reach: each VAE's reconstructions against the
originals (the ceiling of any model decoding through it), and model A's generations of its
memorized captions against their own images, per testbed folder.

Why: a copy is called one at SSCD > 0.5 (paper 1's threshold, the scan's default); if the
VAE's own reconstruction of a training image scores below it, no model built on that VAE
can copy by that measure, however well its UNet memorizes.

Run: python -m benchmarks.testbed_vae_ceiling --testbeds testbed/v2,/tmp/vae-w8 \
         --out benchmarks/results/testbed-vae-ceiling.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def reconstruct(vae, images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) -> the VAE's reconstruction (encoder mean, decoded), uint8."""
    from diffrep.testbed.train import reconstruct as reconstruct_tensor

    rec = reconstruct_tensor(vae, images)
    return ((rec + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def measure(testbed: Path, embedder, sample: int, seeds: int, steps: int, guidance: float) -> dict:
    from diffusers import AutoencoderKL
    from PIL import Image

    from diffrep.testbed import verify

    images = np.load(testbed / "data" / "images.npz")["images"]
    truth = json.loads((testbed / "memorizing" / "testbed" / "truth.json").read_text())["captions"]
    memorized = [c for c in truth if c["kind"] == "memorized" and c["repeats"] > 0]
    rng = np.random.default_rng(0)
    others = rng.choice(len(images), sample, replace=False)
    vae = AutoencoderKL.from_pretrained(testbed / "memorizing" / "vae").eval()

    def embed(arr: np.ndarray) -> np.ndarray:
        return embedder.embed_images([Image.fromarray(a) for a in arr])

    orig = embed(images[others])
    rec = (orig * embed(reconstruct(vae, images[others]))).sum(1)
    mem_idx = [c["index"] for c in memorized]
    mem_rec = (embed(images[mem_idx]) * embed(reconstruct(vae, images[mem_idx]))).sum(1)
    pipe = verify.load_pipeline(testbed / "memorizing", threads=None)
    t0 = time.time()
    gens = verify.generate(pipe, [c["caption"] for c in memorized], list(range(seeds)), steps, guidance)
    gen_s = time.time() - t0
    sims = verify.sscd_similarity(embedder, gens, images[mem_idx]).max(1)
    return {"testbed": str(testbed),
            "vae_channels": list(vae.config.block_out_channels),
            "latent_channels": vae.config.latent_channels,
            "reconstruction_sscd_median": float(np.median(rec)),
            "reconstruction_sscd_above_0.5": float(np.mean(rec > 0.5)),
            "reconstruction_sscd_memorized": [round(float(v), 3) for v in mem_rec],
            "memorized_generation_sscd": [round(float(v), 3) for v in sims],
            "memorized_generation_sscd_median": float(np.median(sims)),
            "memorized_generation_above_0.5": int((sims > 0.5).sum()),
            "memorized": len(memorized), "seeds": seeds, "steps": steps, "guidance_scale": guidance,
            "generation_seconds": round(gen_s, 1)}


def main() -> None:
    import subprocess

    import torch

    from diffrep.models import create_embedder, default_weights

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--testbeds", required=True, help="comma-separated testbed folders")
    ap.add_argument("--sample", type=int, default=200, help="pool images whose reconstruction is scored")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance_scale", type=float, default=12.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    embedder = create_embedder("sscd_onnx", weights=default_weights("sscd_onnx"), device="cpu")
    rows = []
    for folder in args.testbeds.split(","):
        row = measure(Path(folder), embedder, args.sample, args.seeds, args.steps, args.guidance_scale)
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if not isinstance(v, list)}), flush=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"commit": commit, "settings": vars(args), "testbeds": rows}, indent=1))


if __name__ == "__main__":
    main()
