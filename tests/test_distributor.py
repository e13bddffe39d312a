"""Retries on real Ray actors: a unit whose call raises, and one whose actor process
dies, are retried and done exactly once; a unit that always fails is reported."""

import os
from pathlib import Path

import ray

from diffrep.distributor import run_units


@ray.remote(max_restarts=2, max_task_retries=0)
class FlakyWorker:
    """Fails the first call of some units. Markers live on disk: a restarted actor
    has lost its memory, the disk has not."""

    def __init__(self, marker_dir: str):
        self.marker_dir = Path(marker_dir)

    def run(self, unit: str) -> str:
        first_try = not (self.marker_dir / unit).exists()
        (self.marker_dir / unit).touch()
        if unit == "dies-once" and first_try:
            os._exit(1)  # the actor's process dies, as when its node goes
        if unit == "raises-once" and first_try:
            raise RuntimeError("transient failure")
        if unit == "always-fails":
            raise RuntimeError("permanent failure")
        return unit.upper()


def test_failed_units_are_retried_and_done_exactly_once(ray_cluster, tmp_path):
    actor = FlakyWorker.remote(str(tmp_path))
    units = ["a", "dies-once", "b", "raises-once", "c", "always-fails"]
    done: list[tuple[str, str]] = []
    failures = run_units([actor], units, submit=lambda a, u: a.run.remote(u),
                         on_result=lambda u, v: done.append((u, v)), max_attempts=3,
                         progress_interval_s=1)
    assert sorted(done) == [(u, u.upper()) for u in sorted(set(units) - {"always-fails"})]
    assert [f.unit for f in failures] == ["always-fails"]
    assert "permanent failure" in failures[0].error
