"""The LAION-shaped rehearsal (a benchmark, not a test): figures printed and written to JSON.

For each corpus size N it writes a synthetic corpus straight into the embed job's layout
(npy + metadata parquet + stats per shard, so every later job reads it unchanged):
clustered unit vectors, about 30% of images in planted near-duplicate groups with a
heavy-tailed size distribution (most of 2-5, a few of 1,000+), members scattered over the
whole corpus, captions shared inside part of the groups and a few generic captions shared
by unrelated images, as in LAION. The truth (group of every image) stays beside it.

Then, on a local Ray cluster of several raylets, it runs the jobs as a user would
(`python -m jobs.<name>`, each its own driver process): build_index -> search (every
corpus image against the index, top 2; or `--search_queries` of them at every N) -> dedup -> the DCS caption set with `max_captions` (the UNet scoring is left out: its cost per caption is
measured by benchmarks/dcs.py). Per stage: wall time, vectors per second per core, the
driver's peak RSS and the largest peak RSS of any Ray worker process (both sampled every
0.2 s: a shorter spike can be missed), bytes written, and for dedup the planted-pair recall and precision.

Everything that should stay flat is held per unit: slices of `rows_per_slice` vectors,
dedup partitions of `partition_ids` ids, one index shard per `vectors_per_shard` (a shard
actor maps one), IVF lists of ~`list_size` vectors (nlist grows with N, as autofaiss's
choice does) behind an HNSW coarse quantizer (autofaiss's choice at scale: assignment cost
grows with log nlist, not nlist).

Per stage it also records the peak RSS, RssAnon and RssFile of each task type (Ray worker
process titles), and for search and dedup the shard calls per query batch and quantizer
searches per query (the jobs log them).

Run: python -m benchmarks.rehearsal --sizes 1000000,3000000,10000000 --out benchmarks/results/rehearsal.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.common import WorkerRss, measured_commit, raylet_pids, write_results
from diffrep import storage
from diffrep.embed.layout import METADATA_SCHEMA, ModelOutput
from diffrep.index.vectors import list_embedding_files, load_npy
from diffrep.routing import mix64

MODEL = "sscd_onnx"
GENERIC_CAPTIONS = 100
RAYLETS: set[int] | None = None  # the rehearsal cluster's raylets: only their workers are measured


def group_sizes(planted: int, rng: np.random.Generator, max_size: int, large: list[int]) -> np.ndarray:
    """Heavy-tailed sizes (2 + Zipf) summing to about `planted`, plus the `large` ones."""
    sizes = list(large)
    total = sum(sizes)
    while total < planted:
        batch = np.minimum(rng.zipf(2.2, 100_000) + 1, max_size)
        for s in batch.tolist():
            if total >= planted:
                break
            sizes.append(s)
            total += s
    return np.array(sizes, np.int64)


def pseudo_vectors(ids: np.ndarray, dim: int, salt: int) -> np.ndarray:
    """A deterministic pseudo-random vector per id (zero mean, unit variance per component,
    independent across ids and dims), without holding one per id: group bases are the same
    in whichever shard a member lands. A splitmix64 hash of (id, dim, salt); the sin-hash
    used before gave every vector a shared component of ~0.65 of its norm, which at 512
    dims made k-means put half the corpus into two lists."""
    with np.errstate(over="ignore"):
        h = mix64(ids.astype(np.uint64)[:, None] * np.uint64(0x9E3779B97F4A7C15)
                  + np.arange(dim, dtype=np.uint64)[None, :] * np.uint64(0xBF58476D1CE4E5B9)
                  + np.uint64(salt) * np.uint64(0x94D049BB133111EB))
    uniform = (h >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
    return ((uniform - 0.5) * np.sqrt(12.0)).astype(np.float32)


def write_corpus(root: str, n: int, dim: int, shard_rows: int, seed: int = 0, clusters: int = 1000) -> dict:
    """The synthetic corpus in the embed layout; returns its truth summary and writes
    truth.npy (group of each global position, -1: none). `clusters`: topic centres the
    images spread around (fixed: a larger N samples the same distribution more densely)."""
    rng = np.random.default_rng(seed)
    large = [1000, 1500, 2000] if n >= 1_000_000 else [200]
    sizes = group_sizes(int(0.3 * n), rng, max_size=500, large=large)
    members = rng.permutation(n)[: int(sizes.sum())]
    group = np.full(n, -1, np.int32)
    group[members] = np.repeat(np.arange(len(sizes), dtype=np.int32), sizes)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = ModelOutput(root, MODEL)
    for shard, start in enumerate(range(0, n, shard_rows)):
        name = f"{shard:05d}"
        g = group[start:start + shard_rows]
        m = len(g)
        own = np.arange(start, start + m)
        # an image's "content": its group's base when in a group, else its own
        content = np.where(g >= 0, g.astype(np.int64) + 10 * n, own)
        base = centres[content % clusters] + 0.9 * pseudo_vectors(content, dim, 0) / np.sqrt(dim)
        base /= np.linalg.norm(base, axis=1, keepdims=True)
        x = base + 0.02 * rng.standard_normal((m, dim)).astype(np.float32) / np.sqrt(dim)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        storage.write_npy(out.embeddings(name), x.astype(np.float16))
        # captions: shared by the members of even groups; generic captions on 2% of images
        generic = rng.random(m) < 0.02
        captions = [f"generic caption {c}" if gen else (f"group {gg} caption" if gg >= 0 and gg % 2 == 0
                                                         else f"photo {i} of a thing")
                    for i, gg, gen, c in zip(own.tolist(), g.tolist(), generic.tolist(),
                                             rng.integers(0, GENERIC_CAPTIONS, m).tolist(), strict=True)]
        storage.write_parquet(out.metadata(name), pa.table({
            "key": [f"{name}{r:06d}" for r in range(m)],
            "url": [f"https://img.example/{name}/{r}.jpg" for r in range(m)],
            "caption": captions, "shard": [name] * m, "row": np.arange(m, dtype=np.int64),
            "width": np.full(m, 512, np.int32), "height": np.full(m, 512, np.int32),
            "sha256": [""] * m, "image_offset": np.full(m, -1, np.int64),
            "image_size": np.full(m, -1, np.int64)}, schema=METADATA_SCHEMA))
        storage.write_json(out.stats(name), {"shard": name, "embedded": m, "model": {"name": MODEL, "dim": dim}})
    np.save(os.path.join(root, "truth.npy"), group)
    return {"groups": int(len(sizes)), "duplicated_images": int(len(members)),
            "largest_group": int(sizes.max()), "planted_pairs": int((sizes * (sizes - 1) // 2).sum()),
            "group_size_quantiles": {q: int(np.quantile(sizes, q)) for q in (0.5, 0.9, 0.99)}}


def bytes_under(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def run_stage(name: str, argv: list[str], n: int, cores: int, out_dir: str, log_dir: str) -> dict:
    """One job as its own driver process; its figures."""
    log_path = os.path.join(log_dir, f"{name}.log")
    before = bytes_under(out_dir) if os.path.exists(out_dir) else 0
    with WorkerRss(raylets=RAYLETS) as workers, open(log_path, "w") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, *argv], stdout=log, stderr=subprocess.STDOUT)
        workers.driver_pid = proc.pid
        status = proc.wait()
        wall = time.perf_counter() - t0
    if status != 0:
        with open(log_path) as f:
            raise RuntimeError(f"{name} failed:\n{f.read()[-3000:]}")
    row = {"stage": name, "wall_s": round(wall, 2), "vectors_per_s_per_core": round(n / wall / cores, 1),
           "driver_peak_rss_mb": round(workers.driver_peak / 2**20, 1),
           "largest_worker_peak_rss_mb": round(workers.largest_mb, 1),
           "driver_peak_rss_anon_mb": round(workers.driver_peak_anon / 2**20, 1),
           "largest_worker_peak_rss_anon_mb": round(max(workers.peak_anon.values(), default=0) / 2**20, 1),
           "ray_workers_seen": len(workers.peak),
           "peak_by_task_mb": {t: {k: round(v / 2**20, 1) for k, v in p.items()}
                               for t, p in sorted(workers.by_task.items())},
           "total_peak_rss_anon_mb": round(workers.total_anon_peak / 2**20, 1),
           "most_at_once_by_task": dict(sorted(workers.at_once.items())),
           "idle_anon_after_task_mb": {t: round(v / 2**20, 1) for t, v in sorted(workers.idle_after.items())},
           "bytes_written": bytes_under(out_dir) - before}
    with open(log_path) as f:  # the job's own count of shard calls and quantizer searches
        routing = re.findall(r"routing (\{.*\})", f.read())
    if routing:
        row["routing"] = json.loads(routing[-1])
    with open(log_path) as f:  # where the search job's wall went (assign, shards, merge, rerank, naming)
        parts = re.findall(r"seconds by part (\{.*\})", f.read())
    if parts:
        row["seconds_by_part"] = json.loads(parts[-1])
    print(json.dumps(row), flush=True)
    return row


def pair_quality(root: str) -> dict:
    """Planted-pair recall and precision of dedup's pairs/ (streamed batch by batch)."""
    group = np.load(os.path.join(root, "truth.npy"))
    sizes = np.bincount(group[group >= 0])
    planted = int((sizes * (sizes - 1) // 2).sum())
    found = true = 0
    base = os.path.join(root, "dedup", MODEL, "pairs")
    for name in sorted(os.listdir(base)):
        for batch in pq.ParquetFile(os.path.join(base, name)).iter_batches(columns=["id_a", "id_b"]):
            a, b = batch.column(0).to_numpy(), batch.column(1).to_numpy()
            found += len(a)
            true += int(((group[a] == group[b]) & (group[a] >= 0)).sum())
    return {"planted_pairs": planted, "found_pairs": found, "true_found": true,
            "pair_recall": true / max(planted, 1), "pair_precision": true / max(found, 1)}


def query_sample(root: str, m: int) -> str:
    """An .npy of `m` corpus vectors spread evenly over the whole corpus (every
    (N / m)-th row), for a search stage that costs the same number of queries at every N."""
    files = list_embedding_files(root, MODEL)
    total = sum(f.rows for f in files)
    picked = np.linspace(0, total, m, endpoint=False).astype(np.int64)
    parts, offset = [], 0
    for f in files:
        mine = picked[(picked >= offset) & (picked < offset + f.rows)] - offset
        if len(mine):
            parts.append(np.asarray(load_npy(ModelOutput(root, MODEL).embeddings(f.shard))[mine], np.float32))
        offset += f.rows
    path = os.path.join(root, "search_queries.npy")
    np.save(path, np.concatenate(parts))
    return path


def rehearse(n: int, dim: int, args: argparse.Namespace, address: str, cores: int) -> dict:
    keep = os.path.join(args.keep, str(n)) if args.keep else None
    reuse = bool(keep and args.reuse and os.path.exists(os.path.join(keep, "truth.json")))
    with contextlib.nullcontext(keep) if keep else tempfile.TemporaryDirectory(dir=args.work_dir) as root:
        if keep and not reuse:
            if os.path.exists(keep):
                raise SystemExit(f"{keep} exists: remove it, choose another --keep, or --reuse it")
            os.makedirs(keep)
        t0 = time.perf_counter()
        if reuse:  # a kept corpus and its index: the stages after build_index run again on them
            truth = storage.read_json(os.path.join(root, "truth.json"))
        else:
            truth = write_corpus(root, n, dim, args.shard_rows, clusters=args.clusters)
            storage.write_json(os.path.join(root, "truth.json"), truth)
        write_s = time.perf_counter() - t0
        print(json.dumps({"n": n, "corpus_written_s": round(write_s, 1), "reused": reuse, **truth}), flush=True)
        # a power of two near N / list_size (lists 977 / 732 / 1,220 long at 1M / 3M / 10M),
        # or N / list_size exactly (--exact_nlist: shorter lists cost recall at a fixed nprobe)
        nlist = max(64, round(n / args.list_size)) if args.exact_nlist else \
            2 ** max(6, round(math.log2(n / args.list_size)))
        shards = max(1, math.ceil(n / args.vectors_per_shard))
        common = ["--root", root, "--model", MODEL, "--ray_address", address]
        # --actors caps the shard actors (0: one per shard); they share half a CPU
        per_actor = math.ceil(shards / args.actors) if args.actors else 1
        actors = math.ceil(shards / per_actor)
        actor_args = ["--shard_actors", "always", "--shards_per_actor", str(per_actor),
                      "--shard_actor_cpus", str(round(0.5 / actors, 3))]
        logs = os.path.join(args.log_dir, str(n))
        os.makedirs(logs, exist_ok=True)
        stages = [] if reuse else [run_stage("build_index", [
            "-m", "jobs.build_index", *common, "--index_key", f"IVF{nlist}_HNSW32,PQ{args.pq_bytes or dim // 4}x8np",
            "--num_shards", str(shards), "--rows_per_slice", str(args.rows_per_slice),
            "--train_points_per_centroid", "39", "--two_level_lists", str(args.two_level_lists),
            "--eval_queries", "500", "--cpus_per_worker", "1",
            "--max_index_memory_usage", "64GB", "--current_memory_available", "8GB"],
            n, cores, os.path.join(root, "indexes"), logs)]
        for stage in ("search", "dedup"):  # a reused root's earlier outputs go first
            if reuse and stage in args.stages:
                shutil.rmtree(os.path.join(root, stage), ignore_errors=True)
        if "search" in args.stages:  # corpus images against the index, as the demo does
            queries, searched = ["--queries", root], n
            if 0 < args.search_queries < n:  # the same number of queries at every N
                queries = ["--queries", query_sample(root, args.search_queries), "--query_model", MODEL]
                searched = args.search_queries
            stages.append(run_stage("search", [
                "-m", "jobs.search", *common, *queries, "--k", "2", "--nprobe", str(args.nprobe),
                "--batch_size", "8192", *actor_args,
                "--out", os.path.join(root, "search", "results.parquet")],
                searched, cores, os.path.join(root, "search"), logs))
            stages[-1]["queries"] = searched
        if "dedup" not in args.stages:
            return {"n": n, "dim": dim, "nlist": nlist, "index_shards": shards, "shard_actors": actors, "truth": truth,
                    "corpus_written_s": round(write_s, 1), "stages": stages}
        stages.append(run_stage("dedup", [
            "-m", "jobs.dedup", *common, "--threshold", "0.95", "--nprobe", str(args.nprobe),
            "--query_batch", "4096", "--partition_ids", str(args.partition_ids),
            *actor_args, "--report_groups", "4", "--report_members", "4"],
            n, cores, os.path.join(root, "dedup"), logs))
        stages[-1].update(pair_quality(root))
        summary = storage.read_json(os.path.join(root, "dedup", MODEL, "summary.json"))
        stages[-1].update({"duplicated_images_found": summary["duplicated_images"],
                           "groups_found": summary["groups"], "component_steps": summary["component_steps"],
                           "steps_s": summary["seconds"]})
        if "dcs_caption_set" not in args.stages:
            return {"n": n, "dim": dim, "nlist": nlist, "index_shards": shards, "shard_actors": actors,
                    "dedup_partitions": summary["partitions"], "truth": truth,
                    "corpus_written_s": round(write_s, 1), "stages": stages}
        stages.append(run_stage("dcs_caption_set", [
            "-m", "benchmarks.rehearsal", "--caption-set", root, "--max-captions", str(args.max_captions)],
            n, cores, os.path.join(root, "rankings"), logs))
        return {"n": n, "dim": dim, "nlist": nlist, "index_shards": shards, "shard_actors": actors,
                "dedup_partitions": summary["partitions"], "truth": truth,
                "corpus_written_s": round(write_s, 1), "stages": stages}


def caption_set(root: str, max_captions: int) -> None:
    """The DCS job's caption step alone (captions + group sizes -> selected shards)."""
    from diffrep.rank.config import RankConfig
    from diffrep.rank.layout import RankLayout
    from diffrep.rank.run import make_captions

    cfg = RankConfig(root=root, run="rehearsal", model=MODEL, max_captions=max_captions,
                     num_buckets=64, captions_per_shard=20_000)
    stats = make_captions(cfg, RankLayout(root, cfg.run))
    print(json.dumps({k: stats[k] for k in ("rows", "captions", "shards", "duplication_cutoff")}))


def _change(first: dict, last: dict, key: str) -> str:
    return f"{100 * (last[key] / first[key] - 1):+.0f}%"


def _anon(stage: dict) -> str:
    if "driver_peak_rss_anon_mb" not in stage:
        return "-"  # recorded since 2026-12-02
    return f"{stage['driver_peak_rss_anon_mb']:,.0f} / {stage['largest_worker_peak_rss_anon_mb']:,.0f}"


def _routing(stage: dict) -> str:
    r = stage.get("routing")
    if not r:
        return "- | - | -"
    return (f"{r['shard_calls_per_batch']:.2f} (max {r['max_shard_calls_per_batch']}) | {r['shards_per_query']:.2f} "
            f"| {r['quantizer_searches_per_query']:.2f}")


def markdown(results: dict) -> str:
    """The rehearsal as docs/scaling.md's table: one row per (N, stage), then the growth
    of each figure from the smallest N to the largest."""
    lines = ["| N | stage | wall s | vectors/s/core | driver peak RSS MB | largest worker peak RSS MB "
             "| driver / largest worker peak RssAnon MB | MB written | pair recall | pair precision "
             "| shard calls per batch | shards per query | quantizer searches per query |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    by_stage: dict[str, list[dict]] = {}
    for size in results["sizes"]:
        for st in size["stages"]:
            by_stage.setdefault(st["stage"], []).append({**st, "n": size["n"]})
            quality = (f"{st['pair_recall']:.4f} | {st['pair_precision']:.4f}" if "pair_recall" in st
                       else "- | -")
            lines.append(f"| {size['n']:,} | {st['stage']} | {st['wall_s']:.0f} | {st['vectors_per_s_per_core']:,.0f} "
                         f"| {st['driver_peak_rss_mb']:,.0f} | {st['largest_worker_peak_rss_mb']:,.0f} "
                         f"| {_anon(st)} | {st['bytes_written'] / 1e6:,.0f} | {quality} | {_routing(st)} |")
    lines += ["", "| stage | from N to N | largest worker RSS | driver RSS | cost per vector |",
              "| --- | --- | --- | --- | --- |"]
    for stage, rows in by_stage.items():
        a, b = rows[0], rows[-1]
        lines.append(f"| {stage} | {a['n']:,} -> {b['n']:,} | {_change(a, b, 'largest_worker_peak_rss_mb')} "
                     f"| {_change(a, b, 'driver_peak_rss_mb')} "
                     f"| {_change(b, a, 'vectors_per_s_per_core')} |")
    return "\n".join(lines)


def run_sizes(args: argparse.Namespace, measure: Callable[[int, str, int], dict]) -> dict:
    """`measure(n, ray_address, cores)` for each of `args.sizes` on a local Ray cluster of
    `args.nodes` raylets; results (with the commit measured) written to `args.out` after
    every size, so a cut-off run keeps what it measured."""
    import ray
    from ray.cluster_utils import Cluster

    cores = os.cpu_count() or 1
    per_node = max(1, cores // args.nodes)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": per_node, "include_dashboard": False})
    for _ in range(args.nodes - 1):
        cluster.add_node(num_cpus=per_node)
    cluster.wait_for_nodes()
    global RAYLETS
    RAYLETS = raylet_pids(cluster)
    results = {"machine": {"cpus": cores, "raylets": args.nodes}, "commit": measured_commit(), "settings": vars(args),
               "sizes": []}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    try:
        for n in [int(s) for s in args.sizes.split(",")]:
            results["sizes"].append(measure(n, cluster.address, cores))
            write_results(args.out, results)
    finally:
        ray.shutdown()
        cluster.shutdown()
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmarks/results/rehearsal.json")
    p.add_argument("--sizes", default="1000000,3000000,10000000")
    p.add_argument("--dim", type=int, default=64, help="vector dims (SSCD has 512; see docs/scaling.md)")
    p.add_argument("--shard_rows", type=int, default=100_000, help="rows per embedding shard")
    p.add_argument("--rows_per_slice", type=int, default=500_000)
    p.add_argument("--partition_ids", type=int, default=1_000_000)
    p.add_argument("--vectors_per_shard", type=int, default=1_000_000)
    p.add_argument("--clusters", type=int, default=1000, help="topic centres of the synthetic corpus")
    p.add_argument("--list_size", type=int, default=1000, help="vectors per IVF list")
    p.add_argument("--exact_nlist", action="store_true", help="nlist = N / list_size, not a power of two")
    p.add_argument("--nprobe", type=int, default=4)
    p.add_argument("--two_level_lists", type=int, default=65536,
                   help="index.two_level_lists: more lists train in two levels (the jobs' default 65536)")
    p.add_argument("--pq_bytes", type=int, default=0, help="bytes per PQ code; 0: dim / 4 "
                   "(configs/laion2b.yaml's budget gives 512-d SSCD 64)")
    p.add_argument("--max_captions", type=int, default=100_000)
    p.add_argument("--search_queries", type=int, default=0,
                   help="search this many corpus vectors (spread over the corpus) at every N; 0: all N")
    p.add_argument("--actors", type=int, default=0,
                   help="most shard actors (each then holds ceil(shards / actors) shards); 0: one per shard")
    p.add_argument("--nodes", type=int, default=2, help="raylets of the local cluster")
    p.add_argument("--stages", default="build_index,search,dedup,dcs_caption_set",
                   help="after build_index: any of search, dedup (then dcs_caption_set)")
    p.add_argument("--work_dir", default=None)
    p.add_argument("--keep", default=None, help="keep each N's corpus and outputs under KEEP/N "
                   "(e.g. for benchmarks.query_cost) instead of a temporary directory")
    p.add_argument("--reuse", action="store_true", help="with --keep: a KEEP/N kept by an earlier run "
                   "is searched and deduplicated again, its corpus and index not rebuilt")
    p.add_argument("--log_dir", default="bench-results/rehearsal-logs")
    p.add_argument("--table", action="store_true", help="print --out's results as markdown and stop")
    p.add_argument("--caption-set", help=argparse.SUPPRESS)
    p.add_argument("--max-captions", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.caption_set:
        caption_set(args.caption_set, args.max_captions)
        return 0
    if args.table:
        with open(args.out) as f:
            print(markdown(json.load(f)))
        return 0
    results = run_sizes(args, lambda n, address, cores: rehearse(n, args.dim, args, address, cores))
    print(markdown(results))
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
