"""The ranking job's steps: caption set, DCS scoring on actors (resumable per caption
shard), the ranking, ECS and ground truth for its top (resumable per chunk), summary,
report."""

from __future__ import annotations

import logging
import tempfile
import time
from collections import Counter
from dataclasses import asdict

import numpy as np
import pyarrow as pa

from diffrep import storage
from diffrep.config import check_resumed_settings
from diffrep.dedup.read import dedup_base, is_complete
from diffrep.diffusion.native import native_settings, resolve_resolution
from diffrep.diffusion.pipelines import Checkpoint
from diffrep.distributor import run_units_then_release
from diffrep.embed.layout import ModelOutput
from diffrep.progress import Progress
from diffrep.rank.captions import build_caption_shards, caption_inputs
from diffrep.rank.config import RankConfig
from diffrep.rank.layout import RankLayout
from diffrep.rank.merge import merge_runs, sort_run
from diffrep.rank.report import write_report
from diffrep.rank.verbatim import UNTESTED, VERBATIM, precision_vs_found
from diffrep.rank.worker import TRUTH_SCHEMA, RankWorker, ScoreSettings, TruthSettings

log = logging.getLogger("diffrep")
TRUTH_CHUNK = 8  # captions per ground-truth unit


def groups_path(cfg: RankConfig) -> str | None:
    """The dedup output folder to use: auto -> <root>/dedup/<model>/ when finished."""
    if cfg.dedup_groups == "auto":
        auto = dedup_base(cfg.root, cfg.model)
        return auto if is_complete(auto) else None
    return cfg.dedup_groups


def settings(cfg: RankConfig, resolution: int) -> tuple[ScoreSettings, TruthSettings]:
    """The workers' settings; `resolution` (pixels) resolved against the checkpoint."""
    return (ScoreSettings(guidance_scale=cfg.guidance_scale, seed=cfg.seed, resolution=resolution,
                          batch_size=cfg.batch_size, device=cfg.device,
                          pipeline_dtype=cfg.pipeline_dtype),
            TruthSettings(model=cfg.model, ecs_seeds=cfg.ecs_seeds, edge_threshold=cfg.edge_threshold,
                          gamma=cfg.gamma, gt_seeds=cfg.gt_seeds, gt_steps=cfg.gt_steps,
                          delta_v=cfg.delta_v, delta=cfg.delta, neighbours=cfg.neighbours,
                          template_tolerance=cfg.template_tolerance,
                          dedup_groups=groups_path(cfg),
                          template_min_fixed_share=cfg.template_min_fixed_share))


def _check_plan(cfg: RankConfig, layout: RankLayout, score: ScoreSettings, truth: TruthSettings) -> None:
    plan = {"checkpoint": cfg.checkpoint, "captions": cfg.captions, "max_captions": cfg.max_captions,
            "caption_column": cfg.caption_column, "score": asdict(score), "truth": asdict(truth),
            "top_n": cfg.top_n}
    check_resumed_settings(layout.path("plan.json"), plan, "dcs", cfg.run)


def make_captions(cfg: RankConfig, layout: RankLayout) -> dict:
    """The deduplicated caption shards (once; the stats file is the step's marker)."""
    stats_url = layout.path("captions", "_stats.json")
    if storage.exists(stats_url):
        return storage.read_json(stats_url)
    storage.remove_tree(layout.path("captions"))
    spec = cfg.captions or storage.join(ModelOutput(cfg.root, cfg.model).base, "metadata")
    paths = caption_inputs(spec)
    groups = groups_path(cfg)
    with tempfile.TemporaryDirectory(prefix="diffrep-buckets-") as work:
        stats = build_caption_shards(paths, work, layout.path("captions"), cfg.num_buckets,
                                     cfg.captions_per_shard, cfg.caption_column, groups,
                                     cfg.max_captions)
    stats["inputs"], stats["dedup_groups"] = paths, groups
    storage.write_json(stats_url, stats)
    log.info("rank: %d caption rows -> %d distinct captions in %d shard(s) (%s)", stats["rows"],
             stats["captions"], stats["shards"],
             ", ".join(f"{k}={v}" for k, v in stats.items() if k in ("empty_caption",)))
    return stats


def _actors(cfg: RankConfig, checkpoint: Checkpoint, score, truth, n: int) -> list:
    import ray

    cls = ray.remote(RankWorker).options(
        num_cpus=cfg.cpus_per_worker, num_gpus=cfg.gpus_per_worker,
        max_restarts=cfg.max_attempts - 1, max_task_retries=cfg.max_attempts - 1)
    return [cls.remote(cfg.root, checkpoint, score, truth) for _ in range(n)]


def _pool(cfg: RankConfig, actors: list, call, items: list, progress: Progress, count) -> None:
    run_units_then_release(actors, items, call, lambda _item, result: progress.update(count(result)),
                           progress, cfg.max_attempts, cfg.progress_interval_s, f"rank {progress.job}",
                           stall_warning_s=cfg.stall_warning_s)


def run_rank(cfg: RankConfig, checkpoint: Checkpoint) -> dict:
    layout = RankLayout(cfg.root, cfg.run)
    if cfg.overwrite:
        storage.remove_tree(layout.base)
    score, truth = settings(cfg, resolve_resolution(cfg.resolution, checkpoint, "dcs.resolution"))
    _check_plan(cfg, layout, score, truth)
    for folder in ("scores", "truth", "captions"):
        storage.remove_stale_temporaries(layout.path(folder))
    t0 = time.monotonic()
    cap_stats = make_captions(cfg, layout)
    shards = list(range(cap_stats["shards"]))
    todo = [s for s in shards if not storage.exists(layout.scores(s))]
    log.info("rank: scoring %d caption shard(s), %d to do", len(shards), len(todo))
    if todo:
        actors = _actors(cfg, checkpoint, score, None, min(cfg.workers, len(todo)))
        _pool(cfg, actors, lambda a, s: a.score_shard.remote(layout.captions(s), layout.scores(s)),
              todo, Progress("dcs", len(todo), unit="caption shards", item="captions"),
              lambda r: r["captions"])
        # every shard is committed and the actors are gone: what a worker that died
        # mid-write (e.g. with its node) left behind is stale
        storage.remove_stale_temporaries(layout.path("scores"))
    t_score = time.monotonic() - t0

    # each shard sorted alone, then merged batch by batch: the driver never holds every score
    runs = [layout.path("ranked_runs", f"{s:05d}.parquet") for s in shards]
    for s, run in zip(shards, runs, strict=True):
        sort_run(layout.scores(s), run)
    top, dcs_quantiles, scored = merge_runs(runs, layout.path("ranked.parquet"), cfg.top_n)
    storage.remove_tree(layout.path("ranked_runs"))

    rows = top.select(["rank", "caption_id", "caption", "dcs", "noise_magnitude", "keys",
                       "shards"]).to_pylist() if top is not None else []
    chunks = [rows[i:i + TRUTH_CHUNK] for i in range(0, len(rows), TRUTH_CHUNK)]
    todo = [i for i in range(len(chunks)) if not storage.exists(layout.truth(i))]
    log.info("rank: ground truth for the top %d caption(s): %d chunk(s), %d to do", len(rows),
             len(chunks), len(todo))
    t0 = time.monotonic()
    if todo:
        actors = _actors(cfg, checkpoint, score, truth, min(cfg.workers, len(todo)))
        _pool(cfg, actors, lambda a, i: a.truth_chunk.remote(chunks[i], layout.truth(i),
                                                             layout.truth(i, "tar")),
              todo, Progress("truth", len(todo), unit="chunks", item="captions"),
              lambda r: r["captions"])
    # cast: chunks written before TRUTH_SCHEMA have null-typed columns where a chunk had none
    truth_table = pa.concat_tables([storage.read_table(layout.truth(i)).cast(TRUTH_SCHEMA)
                                    for i in range(len(chunks))]) if chunks else None
    summary = summarise(cfg, cap_stats, scored, dcs_quantiles, truth_table)
    summary["resolution"] = score.resolution
    summary["checkpoint_settings"] = native_settings(checkpoint).as_dict()
    summary["seconds"] = {"captions_and_scores": round(t_score, 3),
                          "ground_truth": round(time.monotonic() - t0, 3)}
    storage.write_json(layout.path("summary.json"), summary)
    url = write_report(layout, cfg, summary, truth_table)
    log.info("rank: %d captions scored; top %d labelled %s; report %s", scored, len(rows),
             summary.get("labels"), url)
    return summary


def summarise(cfg: RankConfig, cap_stats: dict, scored: int, dcs_quantiles: dict[str, float],
              truth: pa.Table | None) -> dict:
    out = {"run": cfg.run, "checkpoint": cfg.checkpoint, "captions": cap_stats,
           "scored": scored, "distance": "RMS pixel difference, 256x256 RGB in [0, 1]",
           "delta_v": cfg.delta_v, "delta": cfg.delta, "dcs_quantiles": dcs_quantiles}
    if truth is None or not len(truth):
        return out
    labels = truth["label"].to_pylist()
    out["labels"] = dict(Counter(labels))
    # untested captions are neither found nor missed: the curves run over the tested ones
    tested = np.array([lab != UNTESTED for lab in labels])
    verbatim = np.array([lab in VERBATIM for lab in labels])[tested]
    out["untested"] = int((~tested).sum())
    out["curves"] = {}
    for score in ("dcs", "ecs", "noise_magnitude"):
        found, precision = precision_vs_found(truth[score].to_numpy()[tested], verbatim)
        out["curves"][score] = {"found": found.tolist(), "precision": precision.round(5).tolist()}
    return out
