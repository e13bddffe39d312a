"""Settings a checkpoint determines, read from its pipeline's config files (no weights
loaded): the image side it was trained at (UNet sample_size x VAE scale factor), its
latent channels, its scheduler and prediction type.

A job setting left null takes the checkpoint's value; an explicit value that disagrees is
kept (the user asked for it) and logged with the checkpoint's value beside it, so that a
512 px run of a 32 px model is never silent.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from diffrep.diffusion.pipelines import SCHEDULERS, Checkpoint, CheckpointError

log = logging.getLogger("diffrep")


@dataclass(frozen=True)
class NativeSettings:
    """What a checkpoint's config says. resolution: image side in pixels."""

    resolution: int
    unet_sample_size: int  # latent side, latent pixels
    vae_scale_factor: int  # image pixels per latent pixel
    latent_channels: int
    scheduler: str  # diffusers class name, e.g. "DDIMScheduler"
    prediction_type: str  # "epsilon" or "v_prediction"

    def describe(self) -> str:
        return (f"{self.resolution} px (UNet sample_size {self.unet_sample_size} x VAE scale "
                f"{self.vae_scale_factor}), {self.latent_channels} latent channels, "
                f"{self.scheduler} ({self.prediction_type})")

    def as_dict(self) -> dict:
        return asdict(self)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read the pipeline config ({exc})") from exc


def native_settings(checkpoint: Checkpoint | str) -> NativeSettings:
    """The settings of the pipeline directory `checkpoint` (a Checkpoint or its path),
    as diffusers' StableDiffusionPipeline derives them: vae_scale_factor =
    2 ** (len(vae.block_out_channels) - 1), default height = unet.sample_size * that."""
    root = Path(checkpoint.path if isinstance(checkpoint, Checkpoint) else checkpoint)
    unet = _read_json(root / "unet" / "config.json")
    vae = _read_json(root / "vae" / "config.json") if (root / "vae" / "config.json").is_file() else {}
    sched_files = sorted((root / "scheduler").glob("*.json")) if (root / "scheduler").is_dir() else []
    sched = _read_json(sched_files[0]) if sched_files else {}
    sample = unet.get("sample_size", 64)
    sample = sample[0] if isinstance(sample, list | tuple) else sample
    factor = 2 ** (len(vae.get("block_out_channels", [0, 0, 0, 0])) - 1)
    return NativeSettings(resolution=int(sample) * factor, unet_sample_size=int(sample),
                          vae_scale_factor=factor, latent_channels=int(unet.get("in_channels", 4)),
                          scheduler=str(sched.get("_class_name", "unknown")),
                          prediction_type=str(sched.get("prediction_type", "epsilon")))


def resolve_resolution(configured: int | None, checkpoint: Checkpoint, key: str) -> int:
    """The image side (pixels) to generate `checkpoint` at: `configured` when set (a
    WARNING with the checkpoint's own when they differ), else the checkpoint's. `key`
    names the config key in the messages (e.g. "dcs.resolution")."""
    native = native_settings(checkpoint)
    if configured is None:
        log.info("%s: null -> %d px from %s: %s", key, native.resolution, checkpoint.name,
                 native.describe())
        return native.resolution
    if configured != native.resolution:
        log.warning("%s = %d px, but %s was trained at %d px (%s); generating at %d px as "
                    "configured (null: the checkpoint's own)", key, configured, checkpoint.name,
                    native.resolution, native.describe(), configured)
    return configured


def check_scheduler(configured: str | None, checkpoint: Checkpoint, key: str) -> None:
    """Log when the configured sampler replaces the checkpoint's own (None keeps it)."""
    if configured is None:
        return
    native = native_settings(checkpoint).scheduler
    if SCHEDULERS.get(configured) != native:
        log.info("%s = %s replaces %s's own scheduler %s", key, configured, checkpoint.name, native)
