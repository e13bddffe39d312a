"""Fanning work units out to a pool of Ray actors, with retries and progress.

Each actor runs one unit at a time (Ray actors execute calls in order); the driver
keeps `in_flight_per_actor` calls queued per actor so an actor never idles between
units. A unit whose call fails (a task error, or the actor or its node dying) is
queued again, up to `max_attempts`; actors are created with `max_restarts`, so Ray
restarts a dead one (on another node if its own is gone) and later calls wait for it.

An actor that is only *unavailable* (its node stopped answering and Ray has not yet
declared it dead and restarted it, which takes seconds) costs the unit no attempt: the
unit goes back to the queue for the other actors, and the actor gets no new unit for a
cool-down that doubles each time (1 s up to 30 s), until a call on it succeeds.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import ray
from ray.exceptions import ActorUnavailableError, RayActorError, RayError

from diffrep import faults
from diffrep.progress import Progress
from diffrep.resources import STALL_WARNING_S, StallWatch

U = TypeVar("U")
log = logging.getLogger("diffrep")


@dataclass
class Failure(Generic[U]):
    unit: U
    error: str


def run_units(
    actors: Sequence[Any],
    units: Sequence[U],
    submit: Callable[[Any, U], ray.ObjectRef],
    on_result: Callable[[U, Any], None],
    progress: Progress | None = None,
    max_attempts: int = 3,
    in_flight_per_actor: int = 2,
    progress_interval_s: float = 10.0,
    max_actor_failures: int = 5,
    stall_warning_s: float = STALL_WARNING_S,
) -> list[Failure[U]]:
    """Run every unit on some actor; returns the units that failed `max_attempts` times.

    `submit(actor, unit)` starts the remote call; `on_result(unit, value)` runs in the
    driver for each success (progress, bookkeeping). When no unit has finished for
    `stall_warning_s` seconds while some actor is still waiting for a node, a WARNING says
    which and what the cluster has free (nothing is stopped).
    """
    queue: deque[tuple[U, int]] = deque((u, 0) for u in units)
    live = list(range(len(actors)))
    consecutive_failures = dict.fromkeys(live, 0)
    in_flight: dict[ray.ObjectRef, tuple[int, U, int]] = {}
    load = dict.fromkeys(live, 0)
    cool_until = dict.fromkeys(live, 0.0)
    cool_s = dict.fromkeys(live, 0.0)
    unavailable_retries: dict[int, int] = {}
    failures: list[Failure[U]] = []
    watch = StallWatch("actor pool", stall_warning_s, actors=actors)

    def fill() -> None:
        now = time.monotonic()
        for idx in live:
            if cool_until[idx] > now:
                continue
            while load[idx] < in_flight_per_actor and queue:
                unit, attempt = queue.popleft()
                in_flight[submit(actors[idx], unit)] = (idx, unit, attempt)
                load[idx] += 1

    fill()
    while in_flight or queue:
        if not in_flight:  # every live actor is cooling down
            time.sleep(max(0.1, min(cool_until[i] for i in live) - time.monotonic()))
            fill()
            continue
        ready, _ = ray.wait(list(in_flight), num_returns=1,
                            timeout=min(progress_interval_s, 1.0) if queue else
                            min(progress_interval_s, stall_warning_s))
        if ready:
            watch.progressed()
        watch.check(len(in_flight) + len(queue))
        for ref in ready:
            idx, unit, attempt = in_flight.pop(ref)
            load[idx] -= 1
            try:
                value = ray.get(ref)
            except ActorUnavailableError as exc:
                n = unavailable_retries[id(unit)] = unavailable_retries.get(id(unit), 0) + 1
                cool_s[idx] = min(max(2 * cool_s[idx], 1.0), 30.0)
                cool_until[idx] = time.monotonic() + cool_s[idx]
                if n > 50:  # ~25 min of unavailability: counts as an attempt after all
                    unavailable_retries[id(unit)], attempt = 0, attempt + 1
                if attempt < max_attempts:
                    log.warning("unit %s: actor %d unavailable (%s); requeued, actor resting %.0f s",
                                unit, idx, _short(exc), cool_s[idx])
                    queue.appendleft((unit, attempt))
                else:
                    failures.append(Failure(unit, _short(exc)))
            except RayError as exc:
                actor_died = isinstance(exc, RayActorError)
                consecutive_failures[idx] = consecutive_failures.get(idx, 0) + actor_died
                reason = _short(exc)
                if attempt + 1 < max_attempts:
                    log.warning("unit %s failed (attempt %d/%d, %s); retrying",
                                unit, attempt + 1, max_attempts, reason)
                    queue.append((unit, attempt + 1))
                else:
                    log.error("unit %s failed %d times; giving up: %s", unit, max_attempts, reason)
                    failures.append(Failure(unit, reason))
                    if progress:
                        progress.failed += 1
                if consecutive_failures[idx] >= max_actor_failures and idx in live:
                    log.error("actor %d died %d times in a row; dropping it", idx, max_actor_failures)
                    live.remove(idx)
                    if not live:
                        failures.extend(Failure(u, "no live actors left") for u, _ in queue)
                        queue.clear()
            else:
                consecutive_failures[idx] = 0
                cool_s[idx] = 0.0
                on_result(unit, value)
                faults.unit_finished()
        if progress:
            progress.report(progress_interval_s if not ready else 0.0)
        fill()
    return failures


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}"[:300]


class UnitsFailed(RuntimeError):
    """Some work units failed every attempt; the message names them (a rerun retries them)."""


def run_units_then_release(actors: Sequence[Any], units: Sequence[U],
                           submit: Callable[[Any, U], ray.ObjectRef],
                           on_result: Callable[[U, Any], None], progress: Progress,
                           max_attempts: int, progress_interval_s: float, what: str,
                           stall_warning_s: float = STALL_WARNING_S) -> None:
    """run_units with one call in flight per actor, then kill the actors (their GPUs go
    back to the cluster); raises UnitsFailed naming the units that failed every attempt."""
    try:
        failures = run_units(actors, units, submit, on_result, progress=progress,
                             max_attempts=max_attempts, in_flight_per_actor=1,
                             progress_interval_s=progress_interval_s,
                             stall_warning_s=stall_warning_s)
    finally:
        for a in actors:
            ray.kill(a)
    progress.finish()
    if failures:
        raise UnitsFailed(f"{what}: {len(failures)} unit(s) failed every attempt (rerun the job "
                          f"to retry them): " + "; ".join(f"{f.unit}: {f.error}" for f in failures[:5]))
