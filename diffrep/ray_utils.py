"""Connecting to Ray: an existing cluster (address or $RAY_ADDRESS, as under
`ray job submit`) or a local one started for this process."""

from __future__ import annotations

import logging
import os

import ray


def init_ray(address: str | None = None) -> dict:
    """Connect to (or start) Ray once; returns the cluster's total resources."""
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or None
        kwargs: dict = {"logging_level": logging.WARNING, "log_to_driver": True}
        if address is None:
            kwargs["include_dashboard"] = False
            # A new local cluster gets token authentication (Ray's default) and Ray warns
            # that it did on every start, which nobody can act on: that warning is dropped
            logging.getLogger("ray._private.authentication.authentication_token_setup"
                              ).setLevel(logging.ERROR)
        # "local": always a new cluster for this process. With None, Ray joins whatever
        # local cluster is already running (another job's, a test session's) and the job
        # dies with it; the config says "else start a local Ray", and it does.
        ray.init(address=address or "local", **kwargs)
    return ray.cluster_resources()
