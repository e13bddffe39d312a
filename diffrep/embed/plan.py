"""Planning the embed job: which (shard, models) units are left, and how many actors
of what size the cluster can hold."""

from __future__ import annotations

from dataclasses import dataclass

from diffrep import storage
from diffrep.data.shards import shard_id
from diffrep.embed.config import EmbedConfig
from diffrep.embed.layout import SUBDIRS, ModelOutput
from diffrep.embed.worker import ModelSpec


@dataclass(frozen=True)
class WorkUnit:
    """One input shard and the models it still needs."""

    url: str
    shard: str
    models: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.shard} [{', '.join(self.models)}]"


@dataclass(frozen=True)
class ActorLayout:
    actors: int
    num_cpus: int
    num_gpus: int
    device: str


def plan_units(cfg: EmbedConfig, urls: list[str]) -> list[WorkUnit]:
    """Units for every shard that lacks a stats file for some model (all, if overwrite).

    A shard finished for some models only is redone for the others alone.
    """
    done = {m: set() if cfg.overwrite else ModelOutput(cfg.root, m).completed_shards()
            for m in cfg.models}
    units = []
    for url in urls:
        sid = shard_id(url)
        missing = tuple(m for m in cfg.models if sid not in done[m])
        if missing:
            units.append(WorkUnit(url, sid, missing))
    return units


def clean_partial_outputs(cfg: EmbedConfig) -> int:
    """Remove temporaries left by writers that were killed; returns how many."""
    removed = 0
    for m in cfg.models:
        base = ModelOutput(cfg.root, m).base
        for sub in SUBDIRS:
            removed += storage.remove_stale_temporaries(storage.join(base, sub))
    return removed


def actor_layout(cfg: EmbedConfig, resources: dict) -> ActorLayout:
    """One actor per GPU when the cluster has GPUs (and device allows), else CPU actors
    of `cpus_per_actor` CPUs each."""
    gpus = int(resources.get("GPU", 0))
    cpus = int(resources.get("CPU", 1))
    use_gpu = gpus > 0 and cfg.device in ("auto", "cuda")
    if cfg.device == "cuda" and gpus == 0:
        raise RuntimeError("embed.device is cuda but the Ray cluster has no GPUs: use auto or cpu")
    if use_gpu:
        n = gpus if cfg.actors == "auto" else cfg.actors
        per_actor_cpus = min(cfg.cpus_per_actor, max(1, cpus // max(n, 1)))
        return ActorLayout(n, per_actor_cpus, 1, "cuda")
    per_actor_cpus = min(cfg.cpus_per_actor, cpus)
    n = max(1, cpus // per_actor_cpus) if cfg.actors == "auto" else cfg.actors
    return ActorLayout(n, per_actor_cpus, 0, "cpu")


def model_specs(cfg: EmbedConfig, layout: ActorLayout) -> list[ModelSpec]:
    """Builders for every model; ONNX models on CPU get one thread per reserved CPU."""
    specs = []
    for m in cfg.models:
        options = dict(cfg.model_options.get(m, {}))
        if m.endswith("_onnx") and layout.device == "cpu":
            options.setdefault("threads", layout.num_cpus)
        specs.append(ModelSpec(m, cfg.weights_for(m), options))
    return specs
