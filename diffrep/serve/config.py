"""The serve job's settings and their checks (before anything is opened)."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field

from diffrep.config import ConfigError, helps
from diffrep.data.images import DEFAULT_MAX_PIXELS
from diffrep.search.config import RegionGrid

TOKEN_ENV = "DIFFREP_SERVE_TOKEN"


@dataclass
class ServeConfig(RegionGrid):
    root: str = field(default="data/demo/out", metadata=helps(
        "the output root to serve (a local directory): its indexes, scans, dedup reports, "
        "rankings; verdicts go to <root>/reviews/"))
    host: str = field(default="127.0.0.1", metadata=helps(
        "address to bind; anything but a loopback address needs a token"))
    port: int = field(default=8765, metadata=helps("port to bind"))
    token: str | None = field(default=None, metadata=helps(
        f"access token (else ${TOKEN_ENV}): sent as 'Authorization: Bearer <token>', or once "
        "as ?token=<token> in the browser (kept in a cookie)"))
    model: str | None = field(default=None, metadata=helps(
        "the index whose ids the scans and rankings refer to (null: the root's first index)"))
    page_size: int = field(default=50, metadata=helps("rows per page (1-500)"))
    max_upload_mb: float = field(default=10.0, metadata=helps("largest image upload accepted (MiB)"))
    max_image_pixels: int = field(default=DEFAULT_MAX_PIXELS, metadata=helps(
        "largest uploaded image (width x height), checked before decoding"))
    search_threads: int = field(default=2, metadata=helps(
        "searches and embeddings run at once (each in a worker thread)"))
    shard_actors: bool = field(default=False, metadata=helps(
        "search through one Ray actor per index shard (the jobs' shard actors) instead of "
        "memory-mapping the shards in this process"))
    shard_actor_cpus: float = field(default=1.0, metadata=helps("CPUs per shard actor"))
    ray_address: str | None = field(default=None, metadata=helps(
        "Ray cluster for shard actors or ray_serve (null: $RAY_ADDRESS, else a local Ray)"))
    ray_serve: bool = field(default=False, metadata=helps(
        "run as a Ray Serve application on the cluster (needs ray[serve]) instead of uvicorn here"))
    replicas: int = field(default=1, metadata=helps("Ray Serve replicas (with ray_serve)"))
    replica_cpus: float = field(default=1.0, metadata=helps("CPUs per Ray Serve replica"))

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)

    def resolved_token(self) -> str | None:
        return self.token or os.environ.get(TOKEN_ENV) or None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def validate(cfg: ServeConfig) -> None:
    """Raise ConfigError naming the key of the first bad setting."""
    if not is_loopback(cfg.host) and not cfg.resolved_token():
        raise ConfigError(f"serve.host {cfg.host!r} is reachable from other machines: set "
                          f"serve.token (or ${TOKEN_ENV}), or bind 127.0.0.1")
    token = cfg.resolved_token()
    if token is not None and len(token) < 16:
        raise ConfigError("serve.token must be at least 16 characters")
    if not 0 < cfg.port < 65536:
        raise ConfigError("serve.port must be in 1..65535")
    if not 1 <= cfg.page_size <= 500:
        raise ConfigError("serve.page_size must be in 1..500")
    if not 0 < cfg.max_upload_mb <= 1024:
        raise ConfigError("serve.max_upload_mb must be in (0, 1024]")
    if cfg.max_image_pixels < 1 or cfg.search_threads < 1 or cfg.replicas < 1:
        raise ConfigError("serve.max_image_pixels, serve.search_threads and serve.replicas must be >= 1")
    if cfg.shard_actor_cpus <= 0 or cfg.replica_cpus <= 0:
        raise ConfigError("serve.shard_actor_cpus and serve.replica_cpus must be > 0")
    errors = cfg.region_errors("serve")
    if errors:
        raise ConfigError("; ".join(errors))
