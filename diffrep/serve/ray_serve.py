"""The app as a Ray Serve application: `replicas` copies of the same ASGI app (each opens
the root itself, on whichever node Ray places it), behind Ray Serve's HTTP proxy at
serve.host:serve.port. Blocks until stopped (Ctrl-C or SIGTERM), then deletes the
application."""

from __future__ import annotations

import logging
import signal
import threading

from diffrep.config import ConfigError
from diffrep.serve.config import ServeConfig


def deploy(cfg: ServeConfig, log: logging.Logger) -> str:
    try:
        from ray import serve
    except ImportError as exc:
        raise ConfigError(f"serve.ray_serve needs Ray Serve ({exc}): pip install 'ray[serve]'") from None

    def build():
        from diffrep.serve.app import create_app

        return create_app(cfg)

    serve.start(http_options={"host": cfg.host, "port": cfg.port})
    ingress = serve.deployment(name="diffrep", num_replicas=cfg.replicas,
                               ray_actor_options={"num_cpus": cfg.replica_cpus})(serve.ingress(build)())
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    serve.run(ingress.bind(), name="diffrep", route_prefix="/", blocking=False)  # returns once running
    log.info("serve: Ray Serve application 'diffrep' (%d replica(s), %g CPU each) running at "
             "http://%s:%d; Ctrl-C stops it", cfg.replicas, cfg.replica_cpus, cfg.host, cfg.port)
    try:
        while not stop.wait(1.0):
            pass
    finally:  # a Serve application outlives its driver: take it down with the job
        serve.delete("diffrep")
    return "Ray Serve application 'diffrep' stopped"
