"""One logging setup for every job: timestamped lines on stdout."""

from __future__ import annotations

import logging
import sys


class _CurrentStdoutHandler(logging.StreamHandler):
    """Writes to whatever sys.stdout is now (it may be replaced after setup)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stdout

    @stream.setter
    def stream(self, _value) -> None:
        pass


def setup_logging(level: int = logging.INFO) -> logging.Logger:
    log = logging.getLogger("diffrep")
    if not log.handlers:
        handler = _CurrentStdoutHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(level)
    return log
