"""The app as a Ray Serve application: `replicas` copies of the same ASGI app (each opens
the root itself, on whichever node Ray places it), behind Ray Serve's HTTP proxy at
serve.host:serve.port. Blocks until stopped."""

from __future__ import annotations

import logging

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
    ingress = serve.deployment(name="diffrep", num_replicas=cfg.replicas)(serve.ingress(build)())
    log.info("serve: Ray Serve application 'diffrep' (%d replica(s)) at http://%s:%d", cfg.replicas,
             cfg.host, cfg.port)
    serve.run(ingress.bind(), name="diffrep", route_prefix="/", blocking=True)
    return "Ray Serve application 'diffrep' stopped"
