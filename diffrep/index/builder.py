"""The index build, step by step, resumable at every step:

plan -> train (on a sample) -> add slices (in parallel) -> cut the IVF lists into shards
by their measured sizes and collect each shard's lists from every slice
(diffrep.index.lists) -> measure recall against exact search and pick nprobe ->
index_infos.json -> manifest.json (commit).

A build interrupted at any point resumes from its plan: finished slices and merged shards
are kept. A later run with new embedding shards adds them without retraining: each list's
new entries go to the shard that owns the list, rewritten under a new generation name; the
manifest switch commits.
"""

from __future__ import annotations

import json
import logging
import math
import time

import numpy as np

from diffrep import storage
from diffrep.config import ConfigError
from diffrep.embed.layout import ModelOutput
from diffrep.index import build as work
from diffrep.index import keys, lists, two_level
from diffrep.index.choose import choose_index, nlist_of, shard_count_for_memory
from diffrep.index.config import IndexConfig, memory_bytes
from diffrep.index.layout import IndexLayout
from diffrep.index.manifest import describe_files
from diffrep.index.plan import (
    SliceSpec,
    locate,
    make_slices,
    sample_positions,
    slice_rows_for,
)
from diffrep.index.sweep import EVAL_K, evaluate
from diffrep.index.vectors import EmbeddingFile, list_embedding_files
from diffrep.progress import Progress

log = logging.getLogger("diffrep")


def read_json_or_none(url: str) -> dict | None:
    return storage.read_json(url) if storage.exists(url) else None


def build(cfg: IndexConfig, executor) -> dict:
    """Build or extend the index of `cfg.model` under `cfg.root`; returns index_infos."""
    layout = IndexLayout(cfg.root, cfg.model)
    files = corpus_files(cfg)
    if cfg.overwrite and storage.remove_tree(layout.base):
        log.info("index: --overwrite: removed %s", layout.base)
    manifest = read_json_or_none(layout.manifest)
    plan = read_json_or_none(layout.plan)
    generation = manifest["generation"] + 1 if manifest else 0
    if plan is not None and plan["generation"] != generation:
        log.info("index: discarding a stale plan (generation %s)", plan["generation"])
        plan = None
    if plan is None:
        plan = make_plan(cfg, files, manifest, generation)
        if plan is None:
            log.info("index: %s is up to date (%d vectors); nothing to add", layout.base,
                     manifest["ntotal"])
            return storage.read_json(layout.infos)
        storage.write_json(layout.plan, plan)
    else:
        log.info("index: resuming the build of generation %d", generation)
    for d in ("parts", "ids", "probes", "eval", ""):
        storage.remove_stale_temporaries(layout.path(d) if d else layout.base)

    timings: dict[str, float] = {}
    slices = [SliceSpec.from_json(s) for s in plan["slices"]]
    new_slices = [s for s in slices if s.slice_id in set(plan["new_slices"])]
    eval_vectors = eval_queries(cfg, plan)

    t0 = time.monotonic()
    if not storage.exists(layout.trained):
        choice = plan["choice"]
        log.info("index: training %s on %d vectors (%s)", plan["key"], choice["train_size"],
                 choice["reason"])
        positions = sample_positions(plan["ntotal"], choice["train_size"], cfg.seed + 1,
                                     exclude=np.asarray(plan["eval_global"], np.int64))
        files_in_order = [EmbeddingFile(f, r, plan["dim"], "") for s in slices
                          for f, r in zip(s.files, s.rows, strict=True)]
        if cfg.two_level_lists and nlist_of(plan["key"]) > cfg.two_level_lists:
            trained, trained_info = two_level.train(
                executor, layout.path("training"), cfg.root, cfg.model, plan["key"], plan["dim"], positions,
                files_in_order, cfg.seed + 2, cfg.cpus_per_worker, cfg.coarse_recall)
        else:
            [(trained, trained_info)] = executor.map(work.train_index, [(
                cfg.root, cfg.model, plan["key"], plan["dim"], locate(positions, files_in_order),
                len(positions), cfg.cpus_per_worker, cfg.coarse_recall)])
        log.info("index: k-means ran on %s (%s); coarse quantizer %s", trained_info["training_device"],
                 json.dumps(trained_info.get("two_level") or "one k-means"),
                 json.dumps(trained_info["coarse_quantizer"]))
        storage.write_json(layout.path("trained.json"), trained_info)
        storage.write_bytes(layout.trained, np.asarray(trained).tobytes())
    timings["train_s"] = time.monotonic() - t0
    trained = np.frombuffer(storage.read_bytes(layout.trained), np.uint8)

    t0 = time.monotonic()
    todo = [s for s in new_slices if not storage.exists(layout.part_done(s.slice_id))]
    log.info("index: adding %d slice(s) (%d already done) to %s", len(todo),
             len(new_slices) - len(todo), plan["key"])
    progress = Progress("index add", len(todo), unit="slices", item="vectors")
    executor.map(work.add_slice, [(layout, s) for s in todo],
                 shared={"trained": trained, "eval_queries": eval_vectors, "eval_k": EVAL_K,
                         "threads": cfg.cpus_per_worker, "key_parts": plan.get("key_parts")},
                 progress=progress, count=lambda r: r["vectors"])
    timings["add_s"] = time.monotonic() - t0

    t0 = time.monotonic()
    key_files = build_keys(layout, plan, manifest, new_slices, executor)
    timings["keys_s"] = time.monotonic() - t0

    t0 = time.monotonic()
    shards = merge_shards(cfg, layout, plan, manifest, new_slices, trained, executor)
    timings["merge_s"] = time.monotonic() - t0

    t0 = time.monotonic()
    evaluation = evaluate(cfg, layout, plan, shards, slices, eval_vectors, executor)
    timings["eval_s"] = time.monotonic() - t0

    infos = write_infos(cfg, layout, plan, shards, evaluation, timings)
    commit(layout, plan, shards, slices, key_files)
    log.info("index: committed generation %d: %d vectors in %d shard(s), %s, nprobe=%s, "
             "recall@1=%.3f recall@10=%.3f", generation, infos["ntotal"], len(shards),
             infos["index_key"], infos["nprobe"], infos["recall_at_1"], infos["recall_at_10"])
    return infos


def corpus_files(cfg: IndexConfig) -> list[EmbeddingFile]:
    try:
        files = list_embedding_files(cfg.root, cfg.model)
    except ValueError as exc:
        raise ConfigError(f"index: {exc}") from exc
    if not any(f.rows for f in files):
        raise ConfigError(
            f"index: no completed embeddings of model {cfg.model!r} under {cfg.root}/embeddings/: "
            f"run jobs.embed with this model first (or fix index.model / root)")
    return files


def make_plan(cfg: IndexConfig, files: list[EmbeddingFile], manifest: dict | None,
              generation: int) -> dict | None:
    """The plan of this generation, or None when the index already holds every file."""
    dim = files[0].dim
    if manifest is None:
        total = sum(f.rows for f in files)
        n_eval = min(cfg.eval_queries, total // 2)
        choice = choose_index(total, dim, memory_bytes(cfg.max_index_memory_usage, "max_index_memory_usage"),
                              memory_bytes(cfg.current_memory_available, "current_memory_available"),
                              cfg.exact_below, cfg.index_key, cfg.opq, cfg.train_points_per_centroid,
                              n_eval, cfg.num_shards, cfg.two_level_lists)
        need = shard_count_for_memory(choice.estimated_bytes,
                                      memory_bytes(cfg.current_memory_available, "current_memory_available"))
        if need > cfg.num_shards:
            raise ConfigError(
                f"index.num_shards={cfg.num_shards}: merging one shard of {choice.key} would need "
                f"more than index.current_memory_available={cfg.current_memory_available}; use "
                f"num_shards >= {need} or more memory")
        slices = make_slices(files, slice_rows_for(total, cfg.num_shards, cfg.rows_per_slice))
        num_shards = min(cfg.num_shards, total)
        eval_global = sample_positions(total, n_eval, cfg.seed)
        eval_at = [(shard, int(r)) for shard, rows, _ in locate(eval_global, files) for r in rows]
        return {"generation": 0, "model": cfg.model, "dim": dim, "key": choice.key,
                "choice": {**choice.__dict__}, "ntotal": total, "num_shards": num_shards,
                "key_parts": max(1, math.ceil(total / cfg.key_partition_rows)),
                "slices": [s.to_json() for s in slices], "new_slices": [s.slice_id for s in slices],
                "eval_global": eval_global.tolist(), "eval_at": eval_at}
    if manifest.get("partition") != "lists":
        raise ConfigError(
            f"index: {cfg.root}/indexes/{cfg.model} was built before shards were partitioned by "
            f"IVF list; it still loads and searches, but cannot take new embeddings: rebuild it "
            f"with `python -m jobs.build_index --root {cfg.root} --model {cfg.model} --overwrite true`")
    if manifest["dim"] != dim:
        raise ConfigError(f"index: new embeddings have {dim} dims, the index holds {manifest['dim']}")
    held = {f for s in manifest["slices"] for f in s["files"]}
    new_files = [f for f in files if f.shard not in held and f.rows]
    if not new_files:
        return None
    if not cfg.add:
        raise ConfigError(f"index: {len(new_files)} embedding shard(s) are not in the index; "
                          f"set --add true to add them or --overwrite true to rebuild")
    old = [SliceSpec.from_json(s) for s in manifest["slices"]]
    new = make_slices(new_files, cfg.rows_per_slice, first_slice=max(s.slice_id for s in old) + 1,
                      first_id=manifest["ntotal"])
    log.info("index: adding %d new embedding shard(s) (%d vectors) without retraining",
             len(new_files), sum(f.rows for f in new_files))
    if not manifest.get("key_parts"):
        log.warning("index: this index was committed without a key index; the new generation "
                    "has none either (key lookups scan the id maps): rebuild with --overwrite "
                    "true to get one")
    return {**{k: manifest[k] for k in ("model", "dim", "key", "choice", "num_shards",
                                         "eval_global", "eval_at")},
            "key_parts": manifest.get("key_parts"),
            "generation": generation, "ntotal": manifest["ntotal"] + sum(s.count for s in new),
            "slices": [s.to_json() for s in old + new], "new_slices": [s.slice_id for s in new]}


def eval_queries(cfg: IndexConfig, plan: dict) -> np.ndarray:
    at = plan["eval_at"]
    if not at:
        return np.zeros((0, plan["dim"]), np.float32)
    by_shard: dict[str, list[int]] = {}
    for i, (shard, _) in enumerate(at):
        by_shard.setdefault(shard, []).append(i)
    located = [(shard, np.array([at[i][1] for i in idx]), np.array(idx)) for shard, idx in by_shard.items()]
    return work.gather(cfg.root, cfg.model, located, len(at), plan["dim"])


def build_keys(layout: IndexLayout, plan: dict, manifest: dict | None, new_slices: list[SliceSpec],
               executor) -> list[str]:
    """The key index parts of this generation (one task per part; resumable); [] when the
    plan has no key index."""
    parts = plan.get("key_parts")
    if not parts:
        return []
    previous = manifest.get("key_files") if manifest else None
    files, items = [], []
    for part in range(parts):
        marker = layout.path(f"parts/keys_{part:05d}.json")
        if storage.exists(marker):
            files.append(storage.read_json(marker)["file"])
            continue
        files.append(None)
        items.append((layout, part, [s.slice_id for s in new_slices],
                      previous[part] if previous else None, plan["generation"]))
    log.info("index: key index: %d part(s), %d to do", parts, len(items))
    for result in executor.map(keys.build_key_part, items):
        storage.write_json(layout.path(f"parts/keys_{result['part']:05d}.json"), result)
        files[result["part"]] = result["file"]
    return files


def merge_shards(cfg: IndexConfig, layout: IndexLayout, plan: dict, manifest: dict | None,
                 new_slices: list[SliceSpec], trained: np.ndarray, executor) -> list[dict]:
    """Partition the IVF lists over the shards (diffrep.index.lists; a first build cuts
    them by the sizes measured after the add, an incremental add keeps the committed
    ranges) and write every shard that changes; returns every shard's {shard, file,
    ntotal, first_list, last_list}. The driver holds one int64 per list."""
    generation = plan["generation"]
    new_ids = [s.slice_id for s in new_slices]
    sizes = None
    for s in new_slices:  # streamed: one slice's sizes at a time
        part = lists.read_sizes(layout.part_sizes(s.slice_id))
        sizes = part if sizes is None else sizes + part
    factor = lists.imbalance(sizes)
    advice = (": check the embeddings for collapsed or near-constant vectors, or train on more "
              "points (index.train_points_per_centroid)") if factor > lists.IMBALANCE_WARNING else ""
    log.log(logging.WARNING if factor > lists.IMBALANCE_WARNING else logging.INFO,
            "index: list imbalance %.1f (1.0: balanced; a corpus vector's list holds %.1fx the "
            "mean list's entries, and a query scans as much more per probed list)%s", factor, factor, advice)
    if manifest is None:
        cuts = lists.partition(sizes, plan["num_shards"])
        list_start = np.cumsum(sizes) - sizes
        current: dict[int, dict] = {}
        jobs = {shard: (c["start"], c["end"]) for shard, c in enumerate(cuts)}
        shared = {"list_start": list_start}
        ranges = {shard: (c["first_list"], c["last_list"]) for shard, c in enumerate(cuts)}
    else:
        current = {s["shard"]: s for s in manifest["shards"]}
        ranges = {s["shard"]: (s["first_list"], s["last_list"]) for s in manifest["shards"]}
        owner = lists.owner_of_new_entries([ranges[s] for s in sorted(ranges)], len(sizes))
        gets = np.bincount(owner, weights=sizes, minlength=len(ranges))
        jobs = {shard: None for shard in sorted(ranges) if gets[shard] > 0}
        shared = {"owner": owner}
    items = []
    for shard, take_range in jobs.items():
        out_name = layout.shard_name(shard, generation)
        marker = layout.path(f"parts/{out_name}.json")
        if storage.exists(marker):
            current[shard] = storage.read_json(marker)
            continue
        base = current[shard]["file"] if shard in current else None
        items.append((layout, out_name, base, new_ids, take_range, shard))
    log.info("index: collecting the lists of %d shard(s)", len(items))
    progress = Progress("index merge", len(items), unit="shards", item="vectors")
    results = executor.map(work.merge_lists, items, progress=progress, count=lambda r: r["ntotal"],
                           shared={**shared, "trained": trained, "threads": cfg.cpus_per_worker})
    for item, result in zip(items, results, strict=True):
        shard = item[-1]
        entry = {"shard": shard, "file": result["file"], "ntotal": result["ntotal"],
                 "first_list": int(ranges[shard][0]), "last_list": int(ranges[shard][1])}
        storage.write_json(layout.path(f"parts/{result['file']}.json"), entry)
        current[shard] = entry
    shards = [current[s] for s in sorted(current)]
    held = sum(s["ntotal"] for s in shards)
    if held != plan["ntotal"]:
        raise RuntimeError(f"index: shards hold {held} vectors, the plan {plan['ntotal']}")
    log.info("index: %d shard(s) of %s vectors (largest / mean %.2f)", len(shards),
             "/".join(str(s["ntotal"]) for s in shards[:8]) + ("/..." if len(shards) > 8 else ""),
             lists.balance([s["ntotal"] for s in shards]))
    return shards


def trained_info(layout: IndexLayout) -> dict:
    """Where the trained index's k-means ran and its coarse quantizer's calibration
    (trained.json, kept with trained.index; older indexes: unknown / none)."""
    url = layout.path("trained.json")
    info = storage.read_json(url) if storage.exists(url) else {}
    return {"training_device": info.get("training_device", "unknown"),
            "coarse_quantizer": info.get("coarse_quantizer"),
            "coarse_training": info.get("coarse_training", "one k-means"), "two_level": info.get("two_level")}


def write_infos(cfg: IndexConfig, layout: IndexLayout, plan: dict, shards: list[dict],
                evaluation: dict, timings: dict) -> dict:
    trained = trained_info(layout)
    coarse = trained["coarse_quantizer"]
    size_bytes = 0
    for s in shards:
        fs, path = storage.filesystem(layout.path(s["file"]))
        size_bytes += fs.size(path)
    infos = {
        "model": plan["model"], "dim": plan["dim"], "metric": "inner_product",
        "index_key": plan["key"], "autofaiss_key": plan["choice"]["autofaiss_key"],
        "reason": plan["choice"]["reason"], "train_size": plan["choice"]["train_size"],
        "ntotal": plan["ntotal"], "num_shards": len(shards), "generation": plan["generation"],
        "nprobe": evaluation["nprobe"],
        "search_params": work.search_params(plan["key"], evaluation["nprobe"], (coarse or {}).get("ef")),
        "coarse_quantizer": coarse,
        "recall_at_1": evaluation.get("recall_at_1"), "recall_at_10": evaluation.get("recall_at_10"),
        "ms_per_query": evaluation.get("ms_per_query"), "nprobe_sweep": evaluation["sweep"],
        "eval_queries": len(plan["eval_at"]), "size_bytes": int(size_bytes),
        "estimated_bytes": plan["choice"]["estimated_bytes"],
        "max_index_memory_usage": cfg.max_index_memory_usage,
        "build_seconds": {k: round(v, 3) for k, v in timings.items()},
        "training_device": trained["training_device"],
        "coarse_training": trained["coarse_training"], "two_level": trained["two_level"],
        "embedder": embedder_of(cfg, plan),
    }
    storage.write_json(layout.infos, infos)
    return infos


def embedder_of(cfg: IndexConfig, plan: dict) -> dict:
    """The embed job's description of the model (name, dim, random_init) from a stats file."""
    first = plan["slices"][0]["files"][0]
    stats = storage.read_json(ModelOutput(cfg.root, cfg.model).stats(first))
    return stats.get("model", {})


def commit(layout: IndexLayout, plan: dict, shards: list[dict], slices: list[SliceSpec],
           key_files: list[str]) -> None:
    """Write the manifest (the commit), then remove what the committed index no longer needs."""
    names = ([s["file"] for s in shards] + [layout.idmap_name(s.slice_id) for s in slices]
             + [layout.eval_name(s.slice_id) for s in slices] + key_files
             + ["index_infos.json", "trained.index"]
             + [n for n in ["trained.json"] + [layout.probes_name(s.slice_id) for s in slices]
                if storage.exists(layout.path(n))])  # none of these in indexes built before them
    manifest = {k: plan[k] for k in ("generation", "model", "dim", "key", "choice", "ntotal",
                                     "num_shards", "eval_global", "eval_at")}
    manifest.update({"partition": "lists", "slices": [s.to_json() for s in slices], "shards": shards,
                     "key_parts": len(key_files) or None, "key_files": key_files,
                     "files": describe_files(layout.base, names)})
    storage.write_json(layout.manifest, manifest)
    fs, base = storage.filesystem(layout.base)
    keep = {s["file"] for s in shards}
    for path in fs.ls(base, detail=False):
        name = path.rsplit("/", 1)[-1]
        if name.startswith("shard_") and name not in keep:
            fs.rm(path)
    if fs.exists(f"{base}/parts"):
        fs.rm(f"{base}/parts", recursive=True)
    if fs.exists(f"{base}/keys/runs"):
        fs.rm(f"{base}/keys/runs", recursive=True)
    if fs.exists(f"{base}/keys"):
        held = {k.rsplit("/", 1)[-1] for k in key_files}
        for path in fs.ls(f"{base}/keys", detail=False):
            if path.rsplit("/", 1)[-1] not in held:
                fs.rm(path, recursive=True)
    fs.rm(f"{base}/plan.json")
