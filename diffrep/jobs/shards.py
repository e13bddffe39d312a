"""Turn a folder of images into WebDataset shards that the embed job reads, original bytes
kept (see diffrep/data/folder.py: formats, transparency, captions, keys).

Writes <out_dir>/NNNNN.tar, metadata.parquet (key, url, caption, source) and stats.json
(counts by reason, skipped files; written last: a rerun with it present does nothing).
Run: diffrep shards --folder my_images --out_dir data/mine/shards
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from diffrep import storage
from diffrep.config import ConfigError, helps
from diffrep.data.folder import list_images, samples, write_shards
from diffrep.data.images import DEFAULT_MAX_PIXELS
from diffrep.progress import Progress
from diffrep.runner import Job, JobContext


@dataclass
class ShardsConfig:
    folder: str = field(metadata=helps(
        "a local folder of images (searched recursively); sidecar <name>.txt / .json captions"))
    out_dir: str = field(metadata=helps(
        "where NNNNN.tar go (local or fsspec URL); the embed job's input is "
        "<out_dir>/{00000..NNNNN}.tar"))
    samples_per_shard: int = field(default=10000, metadata=helps("images per shard"))
    max_pixels: int = field(default=DEFAULT_MAX_PIXELS, metadata=helps(
        "images with more pixels are skipped (decompression_bomb)"))
    overwrite: bool = field(default=False, metadata=helps("rewrite even if stats.json exists"))


def run(cfg: ShardsConfig, ctx: JobContext) -> str:
    folder = Path(cfg.folder)
    if not folder.is_dir():
        raise ConfigError(f"shards.folder {cfg.folder!r} is not a folder")
    if cfg.samples_per_shard < 1:
        raise ConfigError("shards.samples_per_shard must be >= 1")
    stats_url = storage.join(cfg.out_dir, "stats.json")
    if storage.exists(stats_url) and not cfg.overwrite:
        stats = storage.read_json(stats_url)
        return (f"exists: {stats['counts'].get('images', 0)} images in {stats['num_shards']} "
                f"shard(s) under {cfg.out_dir} (--overwrite true rewrites); input: {stats['input']}")
    counts: Counter = Counter()
    skipped: list[str] = []
    images = list_images(folder, counts, skipped)
    if not images:
        raise ConfigError(f"shards.folder {cfg.folder!r} holds no image file "
                          f"(.jpg .jpeg .png .webp .gif .bmp .tif .tiff)")
    ctx.working()
    progress = Progress("shards", len(images), unit="files", item="images")
    records: list[dict] = []

    def step() -> None:
        progress.update(1)
        progress.report(every_s=10)

    urls = write_shards(cfg.out_dir, samples(folder, images, counts, skipped, cfg.max_pixels,
                                             records), cfg.samples_per_shard, on_sample=step)
    pattern = storage.join(cfg.out_dir, f"{{00000..{len(urls) - 1:05d}}}.tar") if urls else ""
    columns = ("key", "url", "caption", "source")
    storage.write_parquet(storage.join(cfg.out_dir, "metadata.parquet"),
                          pa.table({c: [r[c] for r in records] for c in columns}))
    stats = {"folder": str(folder.resolve()), "num_shards": len(urls), "input": pattern,
             "counts": dict(sorted(counts.items())), "skipped_files": skipped}
    storage.write_json(stats_url, stats)
    skips = {k[5:]: v for k, v in counts.items() if k.startswith("skip:")}
    ctx.log.info("shards: skipped by reason: %s%s", skips or "none",
                 f" (files listed in {stats_url})" if skips else "")
    return f"{counts['images']} images in {len(urls)} shard(s); embed input: {pattern}"


JOB = Job("shards", ShardsConfig, run, __doc__)
main = JOB.main
