"""The scan job's steps: prompts, baseline, per-checkpoint units on generation actors
(resumable), summary and report."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import replace

import pyarrow as pa

from diffrep import storage
from diffrep.config import ConfigError, check_resumed_settings
from diffrep.diffusion.native import check_scheduler, resolve_resolution
from diffrep.diffusion.pipelines import Checkpoint, output_label
from diffrep.distributor import run_units_then_release
from diffrep.progress import Progress
from diffrep.scan import baseline, prompts
from diffrep.scan.config import ScanConfig
from diffrep.scan.layout import ScanLayout
from diffrep.scan.region_policy import decide_regions
from diffrep.scan.report import write_report
from diffrep.scan.summary import summarise
from diffrep.scan.units import ScanUnit, plan_given_units, plan_prompt_units
from diffrep.scan.worker import GenerationSettings, MatchSettings, ScanWorker, settings_dict
from diffrep.search import LocalShards, RayShards, Searcher
from diffrep.search.index import IndexHandle
from diffrep.search.region_rule import RegionRule

log = logging.getLogger("diffrep")


def settings(cfg: ScanConfig, handle: IndexHandle) -> tuple[GenerationSettings, MatchSettings]:
    random_init = handle.infos.get("embedder", {}).get("random_init", False)
    weights = cfg.weights or ("random" if random_init else None)
    gen = GenerationSettings(seeds_per_prompt=cfg.seeds_per_prompt, seed=cfg.seed,
                             scheduler=cfg.scheduler, steps=cfg.steps,
                             guidance_scale=cfg.guidance_scale, resolution=cfg.resolution,
                             batch_size=cfg.batch_size, device=cfg.device,
                             pipeline_dtype=cfg.pipeline_dtype)
    return gen, MatchSettings(model=cfg.model, weights=weights, k=cfg.k, candidates=cfg.candidates,
                              nprobe=cfg.nprobe,
                              regions=cfg.region_spec(cfg.model) if cfg.regions else None,
                              region_store=cfg.region_store)


def with_verification(cfg: ScanConfig, match: MatchSettings, rule: RegionRule) -> MatchSettings:
    """The region matches each generation verifies geometrically: with scan.region_verify
    (the veto) those above the threshold less scan.region_verify_margin, with the rescue on
    those above its band's lower bound; none when neither applies."""
    bounds = ([round(rule.threshold - cfg.region_verify_margin, 4)] if cfg.region_verify else []) + \
        ([rule.rescue_from] if rule.rescue_from is not None else [])
    if not (bounds and match.regions):
        return match
    return replace(match, verify_above=min(bounds))


def per_checkpoint(cfg: ScanConfig, gen: GenerationSettings,
                   checkpoints: list[Checkpoint]) -> dict[str, GenerationSettings]:
    """Each checkpoint's generation settings: the resolution (pixels) its own unless
    scan.resolution is set (a differing value is logged beside the checkpoint's)."""
    out = {}
    for ckpt in checkpoints:
        check_scheduler(cfg.scheduler, ckpt, "scan.scheduler")
        out[ckpt.label] = replace(gen, resolution=resolve_resolution(cfg.resolution, ckpt,
                                                                     "scan.resolution"))
    return out


def _plan(cfg: ScanConfig, layout: ScanLayout, handle: IndexHandle, gen, match,
          resolutions: dict[str, int]) -> pa.Table | None:
    """Check a resumed run has the settings it started with; returns its prompts (None for
    given images), created and written on the first run."""
    plan = {"checkpoints": cfg.checkpoints, "generated": cfg.generated, "prompts": cfg.prompts,
            "num_prompts": cfg.num_prompts, "prompt_seed": cfg.prompt_seed,
            "index": handle.manifest["key"], **settings_dict(gen, match)}
    if resolutions:
        plan["resolutions"] = resolutions
    check_resumed_settings(layout.path("plan.json"), plan, "scan", cfg.run)
    if cfg.generated:
        table = None
    elif storage.exists(layout.path("prompts.parquet")):
        table = storage.read_table(layout.path("prompts.parquet"))
    else:
        if cfg.prompts == "training":
            table = prompts.from_training(handle, cfg.num_prompts, cfg.prompt_seed)
        else:
            table = prompts.with_source_ids(prompts.from_file(cfg.prompts, cfg.num_prompts), handle)
        storage.write_parquet(layout.path("prompts.parquet"), table)
    return table


def _run_units(cfg: ScanConfig, label: str, checkpoint: Checkpoint | None, units: list[ScanUnit],
               gen: GenerationSettings, match: MatchSettings, shard_actors: list | None) -> None:
    import ray

    layout = ScanLayout(cfg.root, cfg.run)
    for folder in ("generations", "images", "done"):
        storage.remove_stale_temporaries(layout.path(folder, label))
    todo = [u for u in units if not storage.exists(layout.done(label, u.unit))]
    log.info("scan: %s: %d unit(s), %d to do", label, len(units), len(todo))
    if not todo:
        return
    actor_cls = ray.remote(ScanWorker).options(
        num_cpus=cfg.cpus_per_worker, num_gpus=cfg.gpus_per_worker,
        max_restarts=cfg.max_attempts - 1, max_task_retries=cfg.max_attempts - 1)
    actors = [actor_cls.remote(cfg.root, cfg.run, checkpoint, gen, match, shard_actors)
              for _ in range(min(cfg.workers, len(todo)))]
    progress = Progress(f"scan {label}", len(todo), unit="units", item="generations")
    run_units_then_release(actors, todo, lambda a, u: a.run.remote(u),
                           lambda _u, stats: progress.update(stats["generations"], stats["skipped"]),
                           progress, cfg.max_attempts, cfg.progress_interval_s, f"scan {label}",
                           stall_warning_s=cfg.stall_warning_s)
    # every unit is committed and the actors are gone: temporaries of workers that died
    # mid-write (e.g. with their node) are stale
    for folder in ("generations", "images", "done"):
        storage.remove_stale_temporaries(layout.path(folder, label))


def run_scan(cfg: ScanConfig, checkpoints: list[Checkpoint], handle: IndexHandle,
             shard_actors: list | None) -> dict:
    """Every step; returns the summary (also written as summary.json)."""
    layout = ScanLayout(cfg.root, cfg.run)
    if cfg.overwrite:
        storage.remove_tree(layout.base)
    gen, match = settings(cfg, handle)
    gens = per_checkpoint(cfg, gen, checkpoints)
    regions = decide_regions(cfg.regions, {label: g.resolution for label, g in gens.items()},
                             match.regions.scales if match.regions else [], cfg.region_min_side)
    if regions.switched_off:
        log.warning("scan: %s", regions.reason)
        match = replace(match, regions=None)
    backend = RayShards.from_actors(shard_actors, handle) if shard_actors else LocalShards(handle)
    searcher = Searcher(handle, backend, cfg.nprobe)
    base = baseline.load_or_compute(layout, searcher, cfg.baseline_size, cfg.baseline_seed,
                                    cfg.candidates)
    region_nulls = baseline.region_baseline(cfg, match, layout, searcher)
    rule = baseline.region_rule(cfg, region_nulls, handle) if region_nulls is not None else None
    if rule is not None:
        match = with_verification(cfg, match, rule)
    prompt_table = _plan(cfg, layout, handle, gen, match,
                         {label: g.resolution for label, g in gens.items()})
    labels = []
    if cfg.generated:
        label = output_label(cfg.generated_name)
        units = plan_given_units(label, cfg.generated, cfg.prompts_per_unit)
        if not units:
            raise ConfigError(f"scan.generated {cfg.generated!r} holds no image or tar")
        _run_units(cfg, label, None, units, gen, match, shard_actors)
        labels.append((label, units))
    else:
        rows = prompt_table.to_pylist()
        log.info("scan: %d prompt(s) x %d seed(s) x %d checkpoint(s)", len(rows),
                 cfg.seeds_per_prompt, len(checkpoints))
        for ckpt in checkpoints:
            units = plan_prompt_units(ckpt.label, rows, cfg.prompts_per_unit)
            _run_units(cfg, ckpt.label, ckpt, units, gens[ckpt.label], match, shard_actors)
            labels.append((ckpt.label, units))
    # only committed units' files are read (a stray file in the folder is not)
    tables = {label: pa.concat_tables([storage.read_table(layout.generations(label, u.unit))
                                       for u in units]) for label, units in labels}
    summary = summarise(tables, base, cfg.threshold, cfg.model,
                        region_nulls.baseline if region_nulls else None,
                        region_nulls.calibration if region_nulls else None,
                        cfg.uninformative_baseline_share, rule)
    for warning in summary["warnings"]:
        log.warning("scan: %s", warning)
    for label, units in labels:
        skipped: Counter = Counter()
        for u in units:
            skipped.update(storage.read_json(layout.done(label, u.unit))["skipped"])
        summary["checkpoints"][label]["skipped"] = dict(skipped)
    summary["run"], summary["settings"] = cfg.run, settings_dict(gen, match)
    summary["regions"] = regions.as_dict()
    summary["settings"]["resolution_by_checkpoint"] = {label: g.resolution for label, g in gens.items()}
    storage.write_json(layout.path("summary.json"), summary)
    url = write_report(layout, handle, summary, tables, cfg.report_pairs)
    for label, s in summary["checkpoints"].items():
        t = s["top1"]
        log.info("scan: %s: %d generations, %.1f%% above %.2f (median top-1 %s; baseline %s)",
                 label, s["generations"], 100 * t.get("share_above_threshold", 0), cfg.threshold,
                 t.get("quantiles", {}).get("0.5"), summary["baseline"].get("quantiles", {}).get("0.5"))
    log.info("scan: report %s", url)
    return summary
