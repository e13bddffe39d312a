"""What a job asks of Ray, checked against what the cluster offers before anything starts,
and an explanation when nothing can start.

A job describes its request as `Ask`s: groups of members (actors, or tasks of which at
least one must run) that must all be placed at the same time, in the order given, e.g.
the dedup job's K shard actors of c CPUs plus one slice task of 1 CPU beside them.
`fit` checks the request against the cluster's alive nodes (per node: a member never
spans nodes) and either returns it unchanged, returns it fitted (lighter shard actors,
fewer workers, tasks no larger than the largest node; each change named by its config
key, old and new value), or raises ConfigError naming the keys and the cluster's totals.

Placement is simulated best-fit: each member goes to the node with the fewest free CPUs
that still holds it (CPU-only members avoid GPU nodes when they can), so light actors
pack and leave whole CPUs for tasks. If Ray places them otherwise and something cannot
start, the stall warning below says so.

`StallWatch` is the run-time half: when no unit has finished for a while although units
are pending and none can start, it logs (at most once per interval) what the pending units
need against what the cluster has free, and which of the pool's actors still wait for a
node. It never stops anything.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from diffrep.config import ConfigError

log = logging.getLogger("diffrep")
C = TypeVar("C")

EPS = 1e-6
MIN_SHARE_CPUS = 0.01  # the lightest fitted shard actor, CPUs (Ray's unit is 0.0001)
STALL_WARNING_S = 60.0  # default seconds without a finished unit before a stall is explained
GROUP_NODES_CAP = 256  # nodes counted for an autoscaler node group without a maximum


@dataclass(frozen=True)
class Node:
    """One alive node's total resources (CPUs and GPUs, as Ray counts them)."""

    cpus: float
    gpus: float = 0.0


@dataclass(frozen=True)
class Cluster:
    """What a Ray cluster offers: its alive nodes, plus the nodes an autoscaler reports it
    may still start (`autoscaled` of them)."""

    nodes: tuple[Node, ...]
    autoscaled: int = 0

    @property
    def cpus(self) -> float:
        return sum(n.cpus for n in self.nodes)

    @property
    def gpus(self) -> float:
        return sum(n.gpus for n in self.nodes)

    def describe(self) -> str:
        """e.g. '2 CPUs, 0 GPUs on 1 node(s), largest node 2 CPUs / 0 GPUs'."""
        big_c = max((n.cpus for n in self.nodes), default=0.0)
        big_g = max((n.gpus for n in self.nodes), default=0.0)
        auto = f", {self.autoscaled} of them still to be started by the autoscaler" \
            if self.autoscaled else ""
        return (f"{self.cpus:g} CPUs, {self.gpus:g} GPUs on {len(self.nodes)} node(s){auto}, "
                f"largest node {big_c:g} CPUs / {big_g:g} GPUs")


@dataclass(frozen=True)
class Ask:
    """`count` members of `cpus` CPUs and `gpus` GPUs each, held at the same time as the
    asks before them. Tasks of which one running suffices are asked with count 1.

    cpus_fit: "fixed" (never changed), "share" (may be lowered to a fraction, down to
    MIN_SHARE_CPUS: shard actors), "whole" (may be lowered to whole CPUs, at least 1: tasks
    and actors whose CPUs are thread counts). count_fit: the count may be lowered (>= 1).
    The keys name the config keys that set these values, for messages and `fit_config`.
    """

    what: str
    count: int = 1
    cpus: float = 1.0
    gpus: float = 0.0
    cpus_key: str | None = None
    gpus_key: str | None = None
    count_key: str | None = None
    cpus_fit: Literal["fixed", "share", "whole"] = "fixed"
    count_fit: bool = False

    def describe(self) -> str:
        parts = [f"{self.cpus:g} CPU" + (f" ({self.cpus_key})" if self.cpus_key else "")]
        if self.gpus:
            parts.append(f"{self.gpus:g} GPU" + (f" ({self.gpus_key})" if self.gpus_key else ""))
        count = f"{self.count}" + (f" ({self.count_key})" if self.count_key else "")
        return f"{count} x {self.what} of {' + '.join(parts)}"


def read_cluster() -> Cluster:
    """The connected Ray cluster's alive nodes, plus, when an autoscaler reports its node
    groups to Ray (KubeRay, autoscaler v2), the nodes it may still add (up to each group's
    max_count; GROUP_NODES_CAP for an unbounded group)."""
    import ray

    nodes = [Node(float(n["Resources"].get("CPU", 0.0)), float(n["Resources"].get("GPU", 0.0)))
             for n in ray.nodes() if n.get("Alive")]
    extra: list[Node] = []
    try:
        config = ray._private.state.state.get_cluster_config()
    except Exception:  # not reported by this cluster or Ray version
        config = None
    for group in getattr(config, "node_group_configs", None) or []:
        shape = Node(float(group.resources.get("CPU", 0)), float(group.resources.get("GPU", 0)))
        most = GROUP_NODES_CAP if group.max_count < 0 else int(group.max_count)
        extra += [shape] * max(0, most - nodes.count(shape))
    return Cluster(tuple(nodes + extra), autoscaled=len(extra))


def places(asks: Sequence[Ask], cluster: Cluster) -> bool:
    """Whether every member of every ask gets a node, placed in order, each on the node
    with the fewest free CPUs that still holds it (best fit: fractional actors pack onto
    one node and leave whole CPUs for tasks, as Ray's hybrid policy packs a node up to
    half its load before spreading; CPU-only members on CPU-only nodes if any)."""
    free = [[n.cpus, n.gpus, n.gpus > 0] for n in cluster.nodes]
    for ask in asks:
        for _ in range(ask.count):
            fits = [f for f in free if f[0] >= ask.cpus - EPS and f[1] >= ask.gpus - EPS]
            if not fits:
                return False
            if not ask.gpus:
                fits = [f for f in fits if not f[2]] or fits
            best = min(fits, key=lambda f: f[0])
            best[0] -= ask.cpus
            best[1] -= ask.gpus
    return True


def _floor(value: float, whole: bool) -> float:
    if whole:
        return float(max(1, math.floor(value + EPS)))
    return max(MIN_SHARE_CPUS, math.floor(value * 100 + EPS) / 100)


def _fit_to_nodes(ask: Ask, cluster: Cluster) -> tuple[Ask, str | None]:
    """One member must fit on one node: GPUs exist, and CPUs at most the largest node's
    (among those with its GPUs). Lowers `share`/`whole` CPUs to that (returns why), else
    raises ConfigError."""
    if ask.gpus > 0 and cluster.gpus == 0:
        raise ConfigError(f"{ask.gpus_key or ask.what} = {ask.gpus:g} GPU(s) per {ask.what}, "
                          f"but the Ray cluster has no GPU ({cluster.describe()}): set it to 0 "
                          f"or add GPU nodes")
    nodes = [n for n in cluster.nodes if n.gpus >= ask.gpus - EPS]
    if not nodes:
        raise ConfigError(f"{ask.gpus_key or ask.what} = {ask.gpus:g}: no node has that many GPUs "
                          f"({cluster.describe()}): lower it or add bigger GPU nodes")
    largest = max(n.cpus for n in nodes)
    if ask.cpus <= largest + EPS or ask.count == 0:
        return ask, None
    with_gpus = f" with {ask.gpus:g} GPU(s)" if ask.gpus else ""
    if ask.cpus_fit == "fixed" or (ask.cpus_fit == "whole" and largest < 1) or largest <= 0:
        raise ConfigError(f"{ask.cpus_key or ask.what} = {ask.cpus:g} CPUs per {ask.what}, but no "
                          f"node{with_gpus} has more than {largest:g} ({cluster.describe()}): "
                          f"lower it or add bigger nodes")
    new = _floor(largest, ask.cpus_fit == "whole")
    return (dataclasses.replace(ask, cpus=new),
            f"no node{with_gpus} has more than {largest:g} CPUs ({cluster.describe()})")


def _scaled(asks: list[Ask], step: int, steps: int) -> list[Ask]:
    """The asks with `share`/`whole` CPUs scaled by step/steps (floored to their grid)."""
    return [dataclasses.replace(a, cpus=_floor(a.cpus * step / steps, a.cpus_fit == "whole"))
            if a.cpus_fit != "fixed" else a for a in asks]


def _largest_fitting(asks: Sequence[Ask], cluster: Cluster) -> list[Ask] | None:
    """The asks with the largest lowerable CPUs and counts that place (counts first: a
    member dropped only when the lightest CPUs do not make room); None if none does."""
    steps = 1000
    counts = [a.count for a in asks]
    while True:
        trial = [dataclasses.replace(a, count=c) for a, c in zip(asks, counts, strict=True)]
        if places(_scaled(trial, 0, steps), cluster):
            lo, hi = 0, steps  # places at lo; the largest step that places
            while lo < hi:
                mid = (lo + hi + 1) // 2
                lo, hi = (mid, hi) if places(_scaled(trial, mid, steps), cluster) else (lo, mid - 1)
            return _scaled(trial, lo, steps)
        lowerable = [i for i, a in enumerate(asks) if a.count_fit and counts[i] > 1]
        if not lowerable:
            return None
        counts[max(lowerable, key=lambda i: counts[i])] -= 1


def fit(asks: Sequence[Ask], cluster: Cluster) -> tuple[list[Ask], list[str]]:
    """The request fitted to the cluster, and one line per change (key, old -> new, why).

    Each member first fits one node; then, if the members do not all place, lowerable
    CPUs are lowered as little as needed, and counts (count_fit) only when even the
    lightest CPUs leave no room. Raises ConfigError naming the keys and the cluster's
    totals when nothing fits.
    """
    pairs = [_fit_to_nodes(a, cluster) for a in asks]
    result = [a for a, _ in pairs]
    together = None
    if not places(result, cluster):
        result = _largest_fitting(result, cluster)
        if result is None:
            keys = [k for a in asks for k in (a.cpus_key, a.gpus_key, a.count_key) if k]
            raise ConfigError(f"the request does not fit the Ray cluster ({cluster.describe()}): "
                              f"{'; '.join(a.describe() for a in asks)}. Lower "
                              f"{', '.join(dict.fromkeys(keys)) or 'the request'} or add nodes")
        together = (f"{'; '.join(a.describe() for a in asks)} do not fit beside each other "
                    f"on {cluster.describe()}")
    changes = []
    for old, new, (on_node, node_reason) in zip(asks, result, pairs, strict=True):
        if new.count != old.count:
            changes.append(f"{old.count_key or old.what} lowered from {old.count} to {new.count} "
                           f"({together})")
        if new.cpus != old.cpus:
            why = together if together and new.cpus != on_node.cpus else node_reason
            changes.append(f"{old.cpus_key or old.what} lowered from {old.cpus:g} to "
                           f"{new.cpus:g} ({why})")
    return result, changes


def fit_to_cluster(job: str, asks: Sequence[Ask], cluster: Cluster | None = None) -> list[Ask]:
    """`fit` against the connected cluster (read now unless given); logs one WARNING per
    change. Raises ConfigError (prefixed with the job's name) when nothing fits."""
    cluster = cluster or read_cluster()
    try:
        fitted, changes = fit(asks, cluster)
    except ConfigError as exc:
        raise ConfigError(f"{job}: {exc}") from None
    for change in changes:
        log.warning("%s: %s", job, change)
    return fitted


def fit_config(cfg: C, section: str, asks: Sequence[Ask], cluster: Cluster | None = None) -> C:
    """A copy of the job config `cfg` with the fitted values of the asks' keys of
    `section` (e.g. dedup.shard_actor_cpus); see fit_to_cluster."""
    values: dict[str, Any] = {}
    for old, new in zip(asks, fit_to_cluster(section, asks, cluster), strict=True):
        for key, before, after in ((old.cpus_key, old.cpus, new.cpus),
                                   (old.count_key, old.count, new.count)):
            if key and key.startswith(f"{section}.") and before != after:
                name = key.split(".", 1)[1]
                values[name] = type(getattr(cfg, name))(after) if isinstance(
                    getattr(cfg, name), (int, float)) else after
    return dataclasses.replace(cfg, **values) if values else cfg


def _pending_demand() -> str:
    """The cluster's resource requests waiting for a node (autoscaler state in the GCS;
    works without the dashboard), e.g. "{'CPU': 1.0} x 3"; '' when unavailable."""
    try:
        import ray
        from ray.autoscaler.v2.sdk import get_cluster_status

        status = get_cluster_status(ray.get_runtime_context().gcs_address)
        bundles = [f"{dict(r.bundle)} x {r.count}" for d in status.resource_demands.ray_task_actor_demand
                   for r in d.bundles_by_count]
        return ", ".join(bundles) or "none"
    except Exception:
        return ""


def _short(resources: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in sorted(resources.items())
                     if k in ("CPU", "GPU") or not k.startswith(("node:", "memory", "object_store")))


class StallWatch:
    """Explains a stall: no unit finished for `stall_warning_s` although units are pending.

    For tasks (`demand`: one unit's resources), a stall is when one unit's demand does not
    fit in what the cluster has free (so no further unit can start); for an actor pool
    (`actors`), when some actor is not alive yet (still waiting for a node). Logs a
    WARNING with demand vs free resources, at most once per `stall_warning_s`.
    """

    def __init__(self, what: str, stall_warning_s: float = STALL_WARNING_S,
                 demand: dict[str, float] | None = None, actors: Sequence[Any] | None = None):
        self.what, self.stall_warning_s = what, stall_warning_s
        self.demand, self.actors = demand or {}, actors
        self.last = self.checked = time.monotonic()

    def progressed(self) -> None:
        """A unit finished: the stall clock starts again."""
        self.last = time.monotonic()

    def check(self, pending: int) -> str | None:
        """Call now and then while `pending` units wait; returns the warning when logged."""
        now = time.monotonic()
        if pending <= 0 or now - self.last < self.stall_warning_s \
                or now - self.checked < self.stall_warning_s:
            return None
        self.checked = now  # the cluster is asked at most once per interval
        reason = self._reason()
        if reason is None:
            return None
        message = (f"{self.what}: no unit finished in the last {now - self.last:.0f} s, "
                   f"{pending} pending: {reason}")
        log.warning("%s", message)
        return message

    def _reason(self) -> str | None:
        import ray

        free = ray.available_resources()
        total = ray.cluster_resources()
        pending = _pending_demand()
        tail = (f"; free now: {_short(free) or 'nothing'} of {_short(total)}"
                + (f"; requests waiting for resources in the cluster: {pending}" if pending else ""))
        if self.actors is not None:
            ids = {a._actor_id.hex() for a in self.actors}
            states = [v.get("State") for k, v in ray._private.state.actors().items() if k in ids]
            waiting = [s for s in states if s != "ALIVE"]
            if not waiting:
                return None  # every actor is alive: units are running, only slow
            return (f"{len(waiting)} of {len(ids)} actor(s) not running "
                    f"({', '.join(sorted(set(waiting)))}): they wait for a node with the "
                    f"resources they asked for{tail}")
        if all(free.get(k, 0.0) >= v - EPS for k, v in self.demand.items() if v):
            return None  # a unit could start now
        return (f"each unit needs {_short(self.demand)} and that is not free, so no further "
                f"unit can start (if none is running, other actors or jobs hold the "
                f"resources){tail}")
