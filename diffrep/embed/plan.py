"""Planning the embed job: which (shard, models) units are left, and how many actors
of what size the cluster can hold."""

from __future__ import annotations

from dataclasses import dataclass

from diffrep import storage
from diffrep.config import ConfigError
from diffrep.data.shards import shard_id
from diffrep.embed.config import EmbedConfig
from diffrep.embed.layout import SUBDIRS, ModelOutput
from diffrep.embed.worker import ModelSpec
from diffrep.resources import Ask, Cluster, fit_to_cluster


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


def actor_layout(cfg: EmbedConfig, cluster: Cluster) -> ActorLayout:
    """One actor per GPU when the cluster has GPUs (and device allows), else CPU actors
    of `cpus_per_worker` CPUs each; never more CPUs per actor than a node holds (a GPU
    actor: than its node has per GPU), never more actors than the nodes hold (lowered
    with a WARNING naming the key). Raises ConfigError when nothing fits."""
    gpu_nodes = [n for n in cluster.nodes if n.gpus >= 1]
    if cfg.device == "cuda" and not gpu_nodes:
        raise ConfigError(f"embed.device is cuda but the Ray cluster has no GPU "
                          f"({cluster.describe()}): use auto or cpu, or add GPU nodes")
    if gpu_nodes and cfg.device in ("auto", "cuda"):
        n = sum(int(g.gpus) for g in gpu_nodes) if cfg.workers == "auto" else cfg.workers
        per_gpu = min(int(g.cpus // int(g.gpus)) for g in gpu_nodes)
        ask = Ask("GPU embed actors", n, min(cfg.cpus_per_worker, max(1, per_gpu)), 1.0,
                  "embed.cpus_per_worker", "embed.device", "embed.workers", count_fit=True)
        device = "cuda"
    else:
        largest = int(max((c.cpus for c in cluster.nodes), default=0))
        per = max(1, min(cfg.cpus_per_worker, largest))
        n = max(1, sum(int(c.cpus // per) for c in cluster.nodes)) if cfg.workers == "auto" \
            else cfg.workers
        ask = Ask("CPU embed actors", n, cfg.cpus_per_worker, 0.0, "embed.cpus_per_worker", None,
                  "embed.workers", cpus_fit="whole", count_fit=True)
        device = "cpu"
    [fitted] = fit_to_cluster("embed", [ask], cluster)
    return ActorLayout(fitted.count, int(fitted.cpus), int(fitted.gpus), device)


def model_specs(cfg: EmbedConfig, layout: ActorLayout) -> list[ModelSpec]:
    """Builders for every model; ONNX models on CPU get one thread per reserved CPU."""
    specs = []
    for m in cfg.models:
        options = dict(cfg.model_options.get(m, {}))
        if m.endswith("_onnx") and layout.device == "cpu":
            options.setdefault("threads", layout.num_cpus)
        specs.append(ModelSpec(m, cfg.weights_for(m), options))
    return specs
