"""`diffrep serve` under load (a benchmark, not a test): figures printed and written to JSON.

It writes a root (once; reused by --root): N synthetic 512-d descriptors in the embed
job's layout, their IVF-PQ index (built by the index builder), and a scan run of
`scan_rows` generation rows (the scan job's schema, two checkpoints). Then it starts
`diffrep serve` in its own process and measures, at each client concurrency (threads,
one HTTP session each, `requests` calls per level):

- /knn-service with an embedding (clip-retrieval's protocol: the service and the index),
- /knn-service with an image (the descriptor's forward pass as well: SSCD on CPU),
- /scans/<run> pages: the first page, a page a million rows deep... and a filtered one,

giving p50 / p99 latency (ms) and requests per second, and the peak RSS of the server.

With --clip_retrieval_python (the python of a virtualenv holding clip-retrieval), the same
vectors are exported to a clip-retrieval index folder (image.index: one IVF-PQ faiss
index with the same trained quantizer; metadata parquet) and `clip-retrieval back` serves
them with a randomly initialised open_clip ViT-B-32 (nothing is downloaded); the same
embedding and image requests are timed against it, side by side.

Run: python -m benchmarks.serve --vectors 1000000 --out bench-results/serve.json
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import requests

from benchmarks.common import rss_mb, write_results
from diffrep.synthetic import clustered_vectors, write_embeddings

MODEL = "sscd_onnx"
DIM = 512  # SSCD's: image queries go through the real descriptor


def free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_root(root: Path, n: int, shard_rows: int, scan_rows: int, nlist: int) -> dict:
    """The root's embeddings, index and scan run (skipped where they exist)."""
    from diffrep.executor import LocalExecutor
    from diffrep.index.builder import build
    from diffrep.index.config import IndexConfig
    from diffrep.scan.worker import GENERATION_SCHEMA

    times = {}
    if not (root / "embeddings").exists():
        t = time.perf_counter()
        for i, start in enumerate(range(0, n, shard_rows)):  # one shard in memory at a time
            vecs = clustered_vectors(min(shard_rows, n - start), DIM, clusters=200, seed=i)
            write_embeddings(str(root), MODEL, vecs, shard_rows, first_shard=i, dtype="float16")
        times["embeddings_written_s"] = round(time.perf_counter() - t, 1)
    if not (root / "indexes" / MODEL / "manifest.json").exists():
        t = time.perf_counter()
        build(IndexConfig(root=str(root), model=MODEL, index_key=f"IVF{nlist}_HNSW32,PQ{DIM // 8}x8",
                          rows_per_slice=500_000, eval_queries=200, train_points_per_centroid=39,
                          max_index_memory_usage="16GB", current_memory_available="8GB",
                          cpus_per_worker=1), LocalExecutor())
        times["index_built_s"] = round(time.perf_counter() - t, 1)
    gens = root / "scans" / "bench" / "generations"
    if not gens.exists():
        rng = np.random.default_rng(0)
        per_file = 100_000
        for f, start in enumerate(range(0, scan_rows, per_file)):
            m = min(per_file, scan_rows - start)
            label = f"ckpt-{f % 2}"
            ids = rng.integers(0, n, (m, 3))
            sims = np.sort(rng.random((m, 3)).astype(np.float32), axis=1)[:, ::-1]
            table = pa.table({
                "gen_id": [f"{label}/{start + i}/0" for i in range(m)], "checkpoint": [label] * m,
                "checkpoint_path": [f"/models/{label}"] * m, "prompt_id": np.arange(start, start + m),
                "prompt": [f"prompt {(start + i) % 50_000}" for i in range(m)], "source_key": [None] * m,
                "source_id": [None] * m, "seed": rng.integers(0, 4, m), "scheduler": ["DDIMScheduler"] * m,
                "steps": [50] * m, "guidance_scale": [7.5] * m, "resolution": [512] * m,
                "image_tar": [str(root / "scans/bench/images" / label / "00000.tar")] * m,
                "image_member": [f"{label}_{start + i}_0.png" for i in range(m)],
                "top1_id": ids[:, 0], "top1_key": [f"k{i}" for i in ids[:, 0]], "top1_sim": sims[:, 0],
                "source_sim": [None] * m, "match_ids": list(ids), "match_keys": [[f"k{j}" for j in r] for r in ids],
                "match_urls": [[""] * 3] * m, "match_captions": [[""] * 3] * m, "match_sims": list(sims),
                "region_id": [None] * m, "region_key": [None] * m, "region_sim": [None] * m,
                "region_global_sim": [None] * m, "region_box": [None] * m,
                "region_inliers": [None] * m, "region_verified": [None] * m})
            out = gens / label / f"{f:05d}.parquet"
            out.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table.cast(GENERATION_SCHEMA, safe=False), out)
    return times


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(requests.ConnectionError, requests.Timeout):
            if requests.get(url, timeout=10).ok:
                return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"server did not start:\n{log.read_text()[-3000:]}")
        time.sleep(1)


def load(call, concurrency: int, total: int) -> dict:
    """`total` calls of `call(session)` spread over `concurrency` threads; latency in ms."""
    latencies: list[float] = []
    errors = []
    lock = threading.Lock()
    counter = iter(range(total))

    def worker() -> None:
        session = requests.Session()
        while True:
            with lock:
                if next(counter, None) is None:
                    return
            t = time.perf_counter()
            try:
                call(session)
            except Exception as exc:  # noqa: BLE001 - counted, reported
                with lock:
                    errors.append(repr(exc)[:200])
                continue
            with lock:
                latencies.append((time.perf_counter() - t) * 1000)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    lat = np.array(latencies) if latencies else np.array([np.nan])
    return {"concurrency": concurrency, "requests": len(latencies), "errors": len(errors),
            "p50_ms": round(float(np.percentile(lat, 50)), 1), "p99_ms": round(float(np.percentile(lat, 99)), 1),
            "requests_per_s": round(len(latencies) / wall, 2), "first_error": errors[0] if errors else None}


def knn_calls(url: str, index: str, rng: np.random.Generator, image_bytes: list[bytes]) -> dict:
    def embedding(session):
        v = rng.standard_normal(DIM).astype(np.float32)
        r = session.post(url, data=json.dumps({"embedding_input": (v / np.linalg.norm(v)).tolist(),
                                               "indice_name": index, "modality": "image",
                                               "num_images": 10, "deduplicate": False}), timeout=300)
        r.raise_for_status()
        assert len(r.json()) == 10

    def image(session):
        data = image_bytes[int(rng.integers(len(image_bytes)))]
        r = session.post(url, data=json.dumps({"image": base64.b64encode(data).decode(), "indice_name": index,
                                               "modality": "image", "num_images": 10,
                                               "deduplicate": False}), timeout=300)
        r.raise_for_status()
        assert len(r.json()) == 10

    return {"embedding": embedding, "image": image}


def query_images(count: int = 16) -> list[bytes]:
    from PIL import Image
    from skimage import data as skdata

    names = ["astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "moon", "page"]
    out = []
    for i in range(count):
        img = Image.fromarray(getattr(skdata, names[i % len(names)])()).convert("RGB")
        img = img.rotate(i * 7).resize((320, 320))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


@contextlib.contextmanager
def running_server(cmd: list[str], port: int, log: Path, **popen):
    """Start a server process, wait until it answers; yields (base URL, start-up seconds,
    peak RSS sampler: a one-item list in MB, sampled every 0.2 s). Terminated at exit."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, **popen)
    base, peak, stop = f"http://127.0.0.1:{port}", [0.0], threading.Event()

    def sample() -> None:
        while not stop.wait(0.2):
            peak[0] = max(peak[0], rss_mb(proc.pid))

    try:
        t = time.perf_counter()
        wait_ready(f"{base}/indices-list", proc, log)
        start_s = round(time.perf_counter() - t, 1)
        threading.Thread(target=sample, daemon=True).start()
        yield base, start_s, peak
    finally:
        stop.set()
        proc.terminate()
        proc.wait(60)


def time_knn(base: str, index: str, args) -> dict:
    """p50/p99 and requests/s of embedding and image queries at each concurrency."""
    out = {}
    for kind, call in knn_calls(f"{base}/knn-service", index, np.random.default_rng(1), query_images()).items():
        load(call, 4, args.warmup)  # warm: the descriptor, the id map's cache, the page cache
        out[kind] = [load(call, c, args.requests) for c in args.concurrency]
        print(json.dumps({"server": base, "index": index, kind: out[kind]}), flush=True)
    return out


def serve_diffrep(root: Path, args) -> dict:
    port = free_port()
    log = Path(args.log_dir) / "diffrep-serve.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [str(Path(sys.executable).parent / "diffrep"), "serve", "--root", str(root), "--port", str(port),
           "--search_threads", str(args.search_threads)]
    with running_server(cmd, port, log) as (base, start_s, peak):
        out = {"start_s": start_s, "knn": time_knn(base, MODEL, args)}
        deep = max(1, args.scan_rows // 50 - 1)
        pages = {"first page": "/scans/bench", f"page {deep} (row {deep * 50:,})": f"/scans/bench?page={deep}",
                 "filtered (prompt, seed, score)": "/scans/bench?prompt=prompt%2012&seed=1&min_score=0.5",
                 "one checkpoint": "/scans/bench?checkpoint=ckpt-1&page=100"}
        out["scan_pages"] = {}
        for name, path in pages.items():
            def get(session, path=path):
                r = session.get(base + path, timeout=300)
                r.raise_for_status()
            get(requests.Session())
            out["scan_pages"][name] = load(get, 1, args.page_requests)
            print(json.dumps({"page": name, **out["scan_pages"][name]}), flush=True)
        out["server_peak_rss_mb"] = round(peak[0], 1)
        return out


def export_for_clip_retrieval(root: Path, folder: Path) -> None:
    """One faiss index of every vector (the diffrep index's trained quantizer and PQ, ids
    in corpus order) and the metadata in the same order: clip-retrieval's index folder."""
    import faiss

    from diffrep.embed.layout import ModelOutput

    if (folder / "image.index").exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    index = faiss.read_index(str(root / "indexes" / MODEL / "trained.index"))
    emb = ModelOutput(str(root), MODEL)
    shards = sorted(p.stem for p in Path(emb.embeddings("x")).parent.glob("*.npy"))
    metas = []
    for s in shards:
        index.add(np.load(emb.embeddings(s)).astype(np.float32))
        metas.append(pq.read_table(emb.metadata(s), columns=["url", "caption"]))
    infos = json.loads((root / "indexes" / MODEL / "index_infos.json").read_text())
    faiss.ParameterSpace().set_index_parameter(index, "nprobe", int(infos.get("nprobe") or 1))  # as diffrep's
    faiss.write_index(index, str(folder / "image.index"))
    (folder / "metadata").mkdir(exist_ok=True)
    pq.write_table(pa.concat_tables(metas), folder / "metadata" / "0.parquet")


def serve_clip_retrieval(root: Path, args) -> dict:
    folder = root / "clip_retrieval_index"
    export_for_clip_retrieval(root, folder)
    work = Path(args.log_dir) / "clip-retrieval"
    work.mkdir(parents=True, exist_ok=True)
    weights = work / "vit-b-32-random.pt"
    if not weights.exists():  # a randomly initialised ViT-B-32 state dict, saved locally
        subprocess.run([args.clip_retrieval_python, "-c",
                        "import open_clip, torch, sys; m = open_clip.create_model('ViT-B-32', pretrained=None); "
                        "torch.save(m.state_dict(), sys.argv[1])", str(weights)], check=True)
    config = work / "indices.json"
    config.write_text(json.dumps({"bench": {
        "indice_folder": str(folder), "provide_safety_model": False, "enable_faiss_memory_mapping": True,
        "use_arrow": False, "enable_hdf5": False, "reorder_metadata_by_ivf_index": False,
        "columns_to_return": ["url", "caption"], "clip_model": f"open_clip:ViT-B-32//{weights}",
        "enable_mclip_option": False}}))
    port = free_port()
    log = work / "back.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [args.clip_retrieval_python, "-m", "clip_retrieval.clip_back", "--port", str(port),
           "--indices-paths", str(config), "--enable_mclip_option", "False",
           "--provide_violence_detector", "False", "--provide_safety_model", "False",
           "--provide_aesthetic_embeddings", "False"]
    with running_server(cmd, port, log, env=env, cwd=work) as (base, start_s, peak):
        out = {"start_s": start_s, "knn": time_knn(base, "bench", args)}
        out["server_peak_rss_mb"] = round(peak[0], 1)
        return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vectors", type=int, default=1_000_000)
    p.add_argument("--shard_rows", type=int, default=100_000)
    p.add_argument("--nlist", type=int, default=1024)
    p.add_argument("--scan_rows", type=int, default=1_000_000)
    p.add_argument("--concurrency", type=lambda s: [int(v) for v in s.split(",")], default=[1, 8, 32])
    p.add_argument("--requests", type=int, default=200, help="requests per concurrency level")
    p.add_argument("--page_requests", type=int, default=20)
    p.add_argument("--warmup", type=int, default=200, help="requests per kind before the timed ones")
    p.add_argument("--search_threads", type=int, default=2)
    p.add_argument("--root", default="/tmp/diffrep-serve-bench", help="kept and reused")
    p.add_argument("--log_dir", default="/tmp/diffrep-serve-bench-logs")
    p.add_argument("--clip_retrieval_python", default=None,
                   help="python of a virtualenv with clip-retrieval: serve the same vectors with it too")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    results = {"settings": {k: v for k, v in vars(args).items()}, "machine": {"cpus": os.cpu_count()},
               "commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()}
    results["build"] = build_root(root, args.vectors, args.shard_rows, args.scan_rows, args.nlist)
    results["diffrep"] = serve_diffrep(root, args)
    if args.clip_retrieval_python:
        results["clip_retrieval"] = serve_clip_retrieval(root, args)
    write_results(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
