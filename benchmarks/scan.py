"""Scan benchmarks (figures printed and written to JSON; not a test).

- generation: images/s of a random-weight pipeline, one image per call against
  `batch_size` per call (same prompts, seeds, steps). "tiny" is the demo's pipeline;
  "sd_v1" has Stable Diffusion v1's UNet (860M parameters), VAE and text-encoder shapes,
  for a GPU (float16 there).
- matching (CPU, real SSCD when installed): rows/s of a scan unit over already generated
  512 px images, embed + top-k search with exact re-rank, against a synthetic
  IVF-PQ index of `index_size` 512-d vectors, without and with object-level matching
  (regions: 14 descriptor calls and searches per image); and a whole unit with the tiny
  pipeline.

Run: python -m benchmarks.scan --out bench-results/scan.json
     python -m benchmarks.scan --pipeline sd_v1 --device cuda --resolution 512 --steps 50 --skip_match
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from benchmarks.common import write_results


def bench_generation(kind: str, device: str, resolution: int, steps: int, images: int,
                     batch_size: int, tmp: str) -> dict:
    import torch

    from diffrep.diffusion.generate import generate
    from diffrep.diffusion.pipelines import Checkpoint, load_pipeline
    from diffrep.diffusion.tiny import build_tiny_pipeline, sd_v1_components

    path = os.path.join(tmp, kind)
    if kind == "tiny":
        build_tiny_pipeline(path, seed=0, resolution=resolution)
    else:
        build_tiny_pipeline(path, seed=0, resolution=resolution, **sd_v1_components())
    pipe = load_pipeline(Checkpoint(kind, path), device=device, dtype="auto")
    prompts = [f"a photo of object number {i}" for i in range(images)]
    seeds = list(range(images))
    out = {"pipeline": kind, "device": device, "dtype": str(pipe.unet.dtype), "resolution": resolution,
           "steps": steps, "images": images,
           "unet_parameters": sum(p.numel() for p in pipe.unet.parameters())}
    generate(pipe, prompts[:2], seeds[:2], 2, 7.5, resolution, 2)  # warm-up
    for bs in (1, batch_size):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        generate(pipe, prompts, seeds, steps, 7.5, resolution, bs)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        out[f"images_per_s_batch{bs}"] = round(images / dt, 3)
        print(f"generation {kind} on {device}, batch {bs}: {images / dt:.2f} images/s "
              f"({steps} steps, {resolution}px)", flush=True)
    out["batch_speedup"] = round(out[f"images_per_s_batch{batch_size}"] / out["images_per_s_batch1"], 2)
    return out


def bench_match(index_size: int, images: int, tmp: str) -> dict:
    from benchmarks.common import clustered_vectors, write_embeddings
    from diffrep.diffusion.pipelines import Checkpoint
    from diffrep.diffusion.tiny import build_tiny_pipeline
    from diffrep.executor import LocalExecutor
    from diffrep.index.builder import build
    from diffrep.index.config import IndexConfig
    from diffrep.scan.units import ScanUnit
    from diffrep.scan.worker import GenerationSettings, MatchSettings, ScanWorker
    from diffrep.search.regions import RegionSpec
    from diffrep.synthetic import drawn_scene

    root = os.path.join(tmp, "root")
    x = clustered_vectors(index_size, 512, clusters=max(index_size // 100, 10), seed=0)
    write_embeddings(root, "sscd_onnx", x, 50000, dtype="float16")
    t0 = time.perf_counter()
    build(IndexConfig(root=root, model="sscd_onnx", max_index_memory_usage="64MB",
                      current_memory_available="4GB", eval_queries=100), LocalExecutor())
    t_index = time.perf_counter() - t0
    folder = os.path.join(tmp, "generated")
    os.makedirs(folder)
    for i in range(images):
        drawn_scene(i, size=512).save(os.path.join(folder, f"g{i:04d}.png"))
        with open(os.path.join(folder, f"g{i:04d}.txt"), "w") as f:
            f.write(f"prompt {i}")
    match = MatchSettings(model="sscd_onnx", weights=None, k=10, candidates=50)
    # the synthetic index has no corpus images to re-rank with: regions to whole training
    # images only here (benchmarks/regions.py --demo_root measures the re-rank)
    regions = MatchSettings(model="sscd_onnx", weights=None, k=10, candidates=50,
                            regions=RegionSpec(rerank=0))
    paths = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".png"))
    rates = {}
    for name, settings in (("global", match), ("regions", regions)):
        worker = ScanWorker(root, "bench", None, GenerationSettings(), settings)
        worker.run(ScanUnit(f"warm-{name}", 0, sources=paths[:4]))
        t0 = time.perf_counter()
        stats = worker.run(ScanUnit(f"given-{name}", 0, sources=paths))
        dt = time.perf_counter() - t0
        rates[name] = (images / dt, stats)
        print(f"match, {name} (read + SSCD embed + search, {index_size} vectors): "
              f"{images / dt:.1f} rows/s", flush=True)
    ratio = rates["global"][0] / rates["regions"][0]
    print(f"region matching costs x{ratio:.1f} the match time per image", flush=True)
    dt, stats = images / rates["global"][0], rates["global"][1]
    build_tiny_pipeline(os.path.join(tmp, "tiny"), seed=0, resolution=64)
    gen = GenerationSettings(steps=10, resolution=64, batch_size=8, device="cpu")
    worker = ScanWorker(root, "bench", Checkpoint("tiny", os.path.join(tmp, "tiny")), gen, match)
    prompts = [{"prompt_id": i, "prompt": f"a photo {i}", "source_key": None, "source_id": None}
               for i in range(32)]
    t0 = time.perf_counter()
    full = worker.run(ScanUnit("tiny", 0, prompts=prompts))
    dt_full = time.perf_counter() - t0
    print(f"scan unit with the tiny pipeline (generate 64px/10 steps + embed + search): "
          f"{32 / dt_full:.2f} rows/s, of which generation {full['seconds']['generate']:.1f} s "
          f"of {dt_full:.1f} s", flush=True)
    return {"index_size": index_size, "index": worker.searcher.handle.infos.get("index_key"),
            "index_build_s": round(t_index, 1), "match_rows": images,
            "match_rows_per_s": round(images / dt, 2), "match_seconds": stats["seconds"],
            "match_regions_rows_per_s": round(rates["regions"][0], 2),
            "match_regions_seconds": rates["regions"][1]["seconds"],
            "regions_cost_ratio": round(ratio, 2),
            "tiny_unit_rows_per_s": round(32 / dt_full, 2), "tiny_unit_seconds": full["seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench-results/scan.json")
    parser.add_argument("--pipeline", default="tiny", choices=["tiny", "sd_v1"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--index_size", type=int, default=100000)
    parser.add_argument("--skip_match", action="store_true")
    args = parser.parse_args()
    results = {"machine": {"cpus": os.cpu_count()}}
    with tempfile.TemporaryDirectory() as tmp:
        results["generation"] = bench_generation(args.pipeline, args.device, args.resolution,
                                                 args.steps, args.images, args.batch_size, tmp)
        if not args.skip_match:
            results["match"] = bench_match(args.index_size, 128, tmp)
    write_results(args.out, results)


if __name__ == "__main__":
    main()
