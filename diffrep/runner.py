"""One runner for every job: how a job starts, ends, reports and cleans up.

A job is a `Job` (its name, config class and a `run(cfg, ctx)` function); `Job.main(argv)`
is what `diffrep <job>` and `python -m jobs.<job>` call. The runner gives every job the
same edges:

- exit 2: bad input the user must fix (`InputError`: a config key, a checkpoint, an index
  file), with one line naming it; also when the error came back from a Ray task or actor;
- exit 1: the run failed; one line names the error, where it was raised and where the
  Ray workers' logs are (the traceback only with `--debug`);
- exit 0: one summary line with the wall time split into start-up (config, Ray, actors,
  models: everything before `ctx.working()`) and work;
- relative paths in the config are made absolute before any work (diffrep.paths): Ray
  workers run elsewhere;
- resources the job registered with `ctx.release(...)` (shard actors, worker pools) are
  released on every path, so a failed job leaves nothing holding the cluster's CPUs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from diffrep.config import InputError, load_job_config
from diffrep.logs import setup_logging
from diffrep.paths import absolute_paths

C = TypeVar("C")


class JobFailed(RuntimeError):
    """The job's work failed; the message says what (e.g. which units) and what to do."""


class JobContext:
    """What a job's `run` gets besides its config: the log, the cluster, clean-up, timing."""

    def __init__(self, name: str, log: logging.Logger):
        self.name = name
        self.log = log
        self.started_s = time.monotonic()
        self.work_started_s: float | None = None
        self._cleanup = contextlib.ExitStack()

    def ray(self, address: str | None) -> dict:
        """Connect to (or start) Ray; returns the cluster's total resources."""
        from diffrep.ray_utils import init_ray

        return init_ray(address)

    def release(self, resource: Any) -> Any:
        """Close `resource` (anything with `close()`, e.g. RayShards) when the job ends,
        on every path; returns it."""
        self._cleanup.callback(resource.close)
        return resource

    def kill_at_end(self, actors: list) -> list:
        """Kill these Ray actors when the job ends (their CPUs go back to the cluster)."""

        def kill() -> None:
            import ray

            for a in actors:
                with contextlib.suppress(Exception):
                    ray.kill(a)

        self._cleanup.callback(kill)
        return actors

    def working(self) -> None:
        """Start-up (Ray, actors, model loads) is over: from here on the time is work."""
        if self.work_started_s is None:
            self.work_started_s = time.monotonic()

    def times(self) -> tuple[float, float]:
        """(start-up seconds, work seconds) so far."""
        now = time.monotonic()
        work_start = self.work_started_s if self.work_started_s is not None else self.started_s
        return work_start - self.started_s, now - work_start

    def close(self) -> None:
        self._cleanup.close()


@dataclasses.dataclass(frozen=True)
class Job(Generic[C]):
    """One job: `run(cfg, ctx)` does the work and returns its one-line result (or None);
    it raises InputError for bad input and JobFailed (or anything else) when work fails."""

    name: str
    config: type[C]
    run: Callable[[C, JobContext], str | None]
    doc: str
    section: str | None = None  # the config file's section; default: the job's name

    def main(self, argv: list[str] | None = None) -> int:
        return run_job(self, argv)


def run_job(job: Job, argv: list[str] | None = None) -> int:
    """Parse the config, run the job, end it the one way every job ends (see module doc)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    log = setup_logging(logging.DEBUG if debug else logging.INFO)
    ctx = JobContext(job.name, log)
    try:
        try:
            section = job.section or job.name
            cfg = load_job_config(job.config, section, argv, description=job.doc,
                                  prog=f"diffrep {job.name}")
            cfg = absolute_paths(cfg, section)
            result = job.run(cfg, ctx)
        finally:
            ctx.close()
    except InputError as exc:
        if debug:
            log.exception("%s: bad input", job.name)
        log.error("%s: %s", job.name, _first_line(exc))
        return 2
    except KeyboardInterrupt:
        log.error("%s: interrupted; rerun the same command to resume", job.name)
        return 130
    except Exception as exc:  # noqa: BLE001 - every failure ends the same way
        if debug:
            log.exception("%s failed", job.name)
        log.error("%s failed: %s%s", job.name, _describe(exc), _where_logs(debug))
        return 1
    startup_s, work_s = ctx.times()
    log.info("%s: done in %.1f s (start-up %.1f s, work %.1f s)%s", job.name,
             startup_s + work_s, startup_s, work_s, f": {result}" if result else "")
    return 0


def _first_line(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)  # a Ray task error: the error the task raised
    if isinstance(cause, BaseException) and cause is not exc:
        exc = cause
    text = str(exc).strip()
    # a Ray task error's text is the remote traceback; its last line is the error itself
    if "Traceback (most recent call last)" in text:
        text = text.splitlines()[-1]
    return text


def _describe(exc: BaseException) -> str:
    """`Type: message (raised at file:line in function)`, on one line."""
    frames = traceback.extract_tb(exc.__traceback__)
    own = [f for f in frames if "/diffrep/" in f.filename] or frames
    where = ""
    if own:
        f = own[-1]
        where = f" (raised at {f.filename.rsplit('/diffrep/', 1)[-1]}:{f.lineno} in {f.name})"
    message = " ".join(_first_line(exc).split())
    return f"{type(exc).__name__}: {message[:400]}{where}"


def _where_logs(debug: bool) -> str:
    hint = "" if debug else "; --debug shows the traceback"
    try:
        import ray

        if ray.is_initialized():
            from ray._private import worker

            return f"; Ray worker logs: {worker._global_node.get_logs_dir_path()}{hint}"
    except Exception:  # noqa: BLE001 - a log location is a hint, never a second failure
        pass
    return hint
