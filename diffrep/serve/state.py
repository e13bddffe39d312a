"""What the app holds for one root (catalog, tables, thumbnails, verdicts, the opened
indexes) and the request-parameter checks every route shares."""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio
from PIL import Image

from diffrep.data.images import SkipSample, decode_image
from diffrep.serve.catalog import Catalog, NotFound
from diffrep.serve.config import ServeConfig
from diffrep.serve.media import Thumbnails
from diffrep.serve.reviews import Reviews
from diffrep.serve.search import IndexSearch
from diffrep.serve.tables import Tables


class TooLarge(ValueError):
    """An upload above serve.max_upload_mb."""


@dataclass
class ServeState:
    config: ServeConfig
    catalog: Catalog
    tables: Tables
    reviews: Reviews
    searches: dict[str, IndexSearch] = field(default_factory=dict)
    thumbs: Thumbnails | None = None
    # CPU-bound work (search, embedding) runs in worker threads, this many at once
    limiter: anyio.CapacityLimiter | None = None

    @classmethod
    def open(cls, cfg: ServeConfig) -> ServeState:
        """Open the root: every committed index (verified), the verdict database."""
        catalog = Catalog.of(cfg.root)
        searches = {folder: IndexSearch(str(catalog.root), folder, model, cfg.shard_actors,
                                        cfg.shard_actor_cpus, cfg.region_spec(model))
                    for folder, model in catalog.indexes().items()}
        st = cls(cfg, catalog, Tables(catalog), Reviews(catalog.root), searches)
        st.thumbs = Thumbnails(catalog, {f: s.handle for f, s in searches.items()})
        return st

    def close(self) -> None:
        for s in self.searches.values():
            s.close()

    async def run(self, fn, *args):
        """`fn(*args)` in a worker thread (the event loop keeps serving meanwhile)."""
        if self.limiter is None:
            self.limiter = anyio.CapacityLimiter(self.config.search_threads)
        return await anyio.to_thread.run_sync(lambda: fn(*args), limiter=self.limiter)

    def index(self, folder: str) -> IndexSearch:
        if folder not in self.searches:
            raise NotFound(f"no index {folder!r} (this root has {sorted(self.searches)})")
        return self.searches[folder]

    @property
    def default_index(self) -> str:
        """The index whose ids the scans and rankings of this root refer to: the config's
        serve.model, else the first."""
        if self.config.model:
            from diffrep.models import model_dir_name

            return model_dir_name(self.config.model)
        return next(iter(self.searches), "")

    def index_for(self, model_folder: str) -> str:
        """The index of a dedup report's model (same folder name), else the default."""
        return model_folder if model_folder in self.searches else self.default_index

    def key_image(self, index: str, key: str) -> str:
        """An <img> of the corpus image `key` (empty when the index does not hold it)."""
        from diffrep.serve.pages import train_img

        s = self.searches.get(index)
        if s is None:
            return ""
        ids = s.handle.key_to_id([key])
        return train_img(index, ids[key], size=96) if key in ids else ""


def check_length(request, limit: int) -> None:
    """Refuse (413) a request whose declared body is over `limit` bytes before reading it."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"the request body is {int(declared) / 2**20:.1f} MiB; the limit is "
                       f"{limit / 2**20:.1f} MiB (serve.max_upload_mb)")


def int_param(value, name: str, default: int | None) -> int | None:
    """An integer request parameter; ValueError (a 400) naming it when malformed."""
    if value in (None, ""):
        return default
    try:
        return int(str(value))
    except ValueError:
        raise ValueError(f"{name} must be an integer, not {str(value)[:40]!r}") from None


def float_param(value, name: str) -> float | None:
    if value in (None, ""):
        return None
    try:
        out = float(str(value))
    except ValueError:
        raise ValueError(f"{name} must be a number, not {str(value)[:40]!r}") from None
    if out != out or out in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be a finite number")
    return out


def read_upload(data: bytes, cfg: ServeConfig) -> Image.Image:
    """Decode an uploaded image (JPEG, PNG or WebP; at most serve.max_upload_mb and
    serve.max_image_pixels, checked from the header before decoding); ValueError (a 400
    or 413) saying why not."""
    if len(data) > cfg.max_upload_bytes:
        raise TooLarge(f"the upload is {len(data) / 2**20:.1f} MiB; serve.max_upload_mb is {cfg.max_upload_mb}")
    try:
        return decode_image(data, max_pixels=cfg.max_image_pixels).image
    except SkipSample as exc:
        raise ValueError(f"the upload is not an image diffrep can read ({exc.reason})") from None
