"""The download step: LAION-style parquet (url, caption) -> WebDataset shards with
img2dataset, named as the embed job reads them (NNNNN.tar holding <key>.jpg, <key>.txt,
<key>.json; keys are shard + row, `oom_shard_count` digits of shard).

Defaults follow LAION's own img2dataset runs: images resized so the short side is at
most `image_size` (aspect kept, never upscaled), JPEG quality 95, 10k samples per shard,
incremental mode (a rerun downloads only the shards not finished), and the sites'
opt-out headers (noai, noimageai, noindex, noimageindex) respected.
"""

from __future__ import annotations

import glob
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Literal

from diffrep.config import ConfigError, helps

log = logging.getLogger("diffrep")


@dataclass
class DownloadConfig:
    url_list: str = field(default="", metadata=helps(
        "parquet file or folder of parquets with url and caption columns (LAION's metadata)"))
    output_folder: str = field(default="shards", metadata=helps(
        "where NNNNN.tar shards go (local or s3://...); the embed job's input"))
    url_col: str = field(default="url", metadata=helps("column holding image URLs"))
    caption_col: str = field(default="caption", metadata=helps(
        "column holding captions (LAION: TEXT)"))
    save_additional_columns: list[str] = field(default_factory=list, metadata=helps(
        "other columns copied into each sample's .json (e.g. [similarity, aesthetic])"))
    image_size: int = field(default=512, metadata=helps("short side at most this many pixels"))
    resize_mode: Literal["keep_ratio", "no", "border", "center_crop"] = field(
        default="keep_ratio", metadata=helps("img2dataset resize mode"))
    encode_quality: int = field(default=95, metadata=helps("JPEG quality of re-encoded images"))
    number_sample_per_shard: int = field(default=10000, metadata=helps("samples per tar"))
    processes_count: int = field(default=16, metadata=helps("download processes (per node)"))
    thread_count: int = field(default=64, metadata=helps("download threads per process"))
    distributor: Literal["multiprocessing", "pyspark", "ray"] = field(
        default="multiprocessing", metadata=helps("img2dataset's distributor; ray spreads over the cluster"))
    incremental_mode: Literal["incremental", "overwrite"] = field(
        default="incremental", metadata=helps("incremental: a rerun skips finished shards"))
    timeout: int = field(default=10, metadata=helps("seconds per image request"))
    retries: int = field(default=1, metadata=helps("retries per image"))
    min_image_size: int = field(default=64, metadata=helps("smaller images are dropped, counted"))
    max_aspect_ratio: float = field(default=10.0, metadata=helps("more elongated images are dropped"))
    oom_shard_count: int = field(default=5, metadata=helps(
        "digits of shard numbers: 5 up to 100k shards (1B images at 10k per shard), then 6"))


def validate(cfg: DownloadConfig) -> None:
    errors = []
    if not cfg.url_list:
        errors.append("download.url_list is required (a parquet file or folder)")
    elif "://" not in cfg.url_list and not os.path.exists(cfg.url_list):
        errors.append(f"download.url_list {cfg.url_list!r} does not exist")
    for key in ("image_size", "number_sample_per_shard", "processes_count", "thread_count", "timeout"):
        if getattr(cfg, key) < 1:
            errors.append(f"download.{key} must be >= 1")
    if not 1 <= cfg.encode_quality <= 100:
        errors.append("download.encode_quality must be in [1, 100]")
    if errors:
        raise ConfigError("invalid download config:\n  - " + "\n  - ".join(errors))


def run_download(cfg: DownloadConfig) -> dict:
    """Run img2dataset; returns totals over its per-shard stats (successes, failures by
    reason), which it writes beside the shards as NNNNN_stats.json."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    from img2dataset import download

    download(url_list=cfg.url_list, output_folder=cfg.output_folder, input_format="parquet",
             output_format="webdataset", url_col=cfg.url_col, caption_col=cfg.caption_col,
             save_additional_columns=cfg.save_additional_columns or None,
             image_size=cfg.image_size, resize_mode=cfg.resize_mode, resize_only_if_bigger=True,
             encode_format="jpg", encode_quality=cfg.encode_quality,
             number_sample_per_shard=cfg.number_sample_per_shard,
             processes_count=cfg.processes_count, thread_count=cfg.thread_count,
             distributor=cfg.distributor, incremental_mode=cfg.incremental_mode,
             timeout=cfg.timeout, retries=cfg.retries, min_image_size=cfg.min_image_size,
             max_aspect_ratio=cfg.max_aspect_ratio, enable_wandb=False,
             oom_shard_count=cfg.oom_shard_count)
    return collect_stats(cfg.output_folder)


def collect_stats(folder: str) -> dict:
    """Totals of img2dataset's NNNNN_stats.json files in a local `folder`."""
    totals: dict = {"shards": 0, "count": 0, "successes": 0, "failed_to_download": 0,
                    "failed_to_resize": 0, "status_dict": {}}
    for path in sorted(glob.glob(os.path.join(folder, "*_stats.json"))):
        with open(path) as f:
            s = json.load(f)
        totals["shards"] += 1
        for key in ("count", "successes", "failed_to_download", "failed_to_resize"):
            totals[key] += int(s.get(key, 0))
        for reason, n in s.get("status_dict", {}).items():
            totals["status_dict"][reason] = totals["status_dict"].get(reason, 0) + n
    return totals
