"""Fault injection for the kill-and-resume tests, off unless the environment asks.

`DIFFREP_KILL_AFTER_UNITS=N` makes a job's driver SIGKILL itself right after its N-th
finished work unit (an embed shard, a scan unit, a caption shard, an index or dedup task)
has been recorded. The kill lands at a known point whatever the machine's speed, which a
test polling for output files and killing from outside cannot promise. The driver's
actors and tasks die with it, as on a real crash.
"""

from __future__ import annotations

import os
import signal

_finished = 0


def unit_finished() -> None:
    """Count one finished unit; SIGKILL this process at the N-th when asked to."""
    global _finished
    limit = os.environ.get("DIFFREP_KILL_AFTER_UNITS")
    if not limit:
        return
    _finished += 1
    if _finished >= int(limit):
        os.kill(os.getpid(), signal.SIGKILL)
