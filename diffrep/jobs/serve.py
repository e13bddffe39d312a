"""Serve one output root in a browser: search the training set with an image or a key,
page through scan generations, duplicate groups and caption rankings, record reviewer
verdicts (SQLite under the root), and answer clip-retrieval's /knn-service, /indices-list
and /metadata. Runs until stopped (Ctrl-C), on this machine (uvicorn) or as a Ray Serve
application (--ray_serve true).

Run: diffrep serve --root data/demo/out   (then open http://127.0.0.1:8765)
"""

from __future__ import annotations

from diffrep.config import ConfigError
from diffrep.runner import Job, JobContext
from diffrep.serve.config import ServeConfig, validate


def run(cfg: ServeConfig, ctx: JobContext) -> str:
    validate(cfg)
    if cfg.ray_serve:
        from diffrep.serve.ray_serve import deploy

        ctx.ray(cfg.ray_address)
        ctx.working()
        return deploy(cfg, ctx.log)
    import uvicorn

    from diffrep.serve.app import create_app
    from diffrep.serve.state import ServeState

    if cfg.shard_actors:
        ctx.ray(cfg.ray_address)
    try:
        state = ctx.release(ServeState.open(cfg))
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    app = create_app(cfg, state)
    ctx.working()
    ctx.log.info("serve: %s at http://%s:%d (indexes %s; Ctrl-C stops)", state.catalog.root,
                 cfg.host, cfg.port, ", ".join(state.searches) or "none")
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning", access_log=False)
    return f"served {state.catalog.root}"


JOB = Job("serve", ServeConfig, run, __doc__)
main = JOB.main
