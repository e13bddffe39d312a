"""Train the memorization testbed (diffrep.testbed): a tiny text-conditional latent
diffusion model A that memorizes a known subset of its training set, and model B trained
on many more distinct images with no repeats. ~50 min on one CPU thread.

Writes <out_dir>/{data/, memorizing/, large-data/, build.json} (see diffrep.testbed.build).
Run: diffrep train_testbed [--out_dir testbed] [--unet_steps N] [--models "[A]"]
     diffrep train_testbed --design scenes --out_dir testbed/v2   # testbed v2 (64x64 scenes)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from diffrep.config import ConfigError, helps
from diffrep.runner import Job, JobContext


@dataclass
class TestbedJobConfig:
    out_dir: str = field(default="testbed", metadata=helps("output folder of the testbed"))
    design: str = field(default="crops", metadata=helps(
        "the pool: crops (v1, 32x32 crops of 19 photos) or scenes (v2, 64x64 photo mosaics "
        "with object cut-outs from openclipart-png and tuxpaint-stamps-default, four kinds "
        "of memorization; diffrep.testbed.scene_pool)"))
    models: list = field(default_factory=lambda: ["A", "B"], metadata=helps(
        "which models to train: A (memorizing), B (large data)"))
    seed: int = field(default=0, metadata=helps("seed of the data and of every model"))
    unet_steps: int = field(default=3500, metadata=helps("UNet optimisation steps per model"))
    vae_steps: int = field(default=0, metadata=helps(
        "VAE optimisation steps; 0: the design's (crops 1200, scenes 2400)"))
    vae_channels: list = field(default_factory=list, metadata=helps(
        "the VAE's channels per level, one level per entry (each level after the first "
        "halves the side); empty: the design's (crops [16, 32], scenes [32, 64, 128])"))
    latent_channels: int = field(default=0, metadata=helps(
        "channels of the VAE's latents; 0: the design's (crops 4, scenes 8)"))
    unet_channels: list = field(default_factory=list, metadata=helps(
        "the UNet's channels at its two resolutions; empty: the design's (crops [32, 64], "
        "scenes [48, 96])"))
    object_repeats: int = field(default=0, metadata=helps(
        "scenes design: views of each object-kind scene in model A's set; 0: the design's (12)"))
    vae_from: str = field(default="", metadata=helps(
        "a model folder whose VAE is used instead of training one (same vae_channels and "
        "latent_channels); empty: train the VAE"))
    threads: int = field(default=1, metadata=helps("torch CPU threads"))
    device: str = field(default="cpu", metadata=helps(
        "where the VAE and UNets train: cpu or cuda[:N] (random draws stay on the CPU, so a "
        "GPU run follows the same data order; its weights differ by float rounding)"))
    once_a: int = field(default=1500, metadata=helps(
        "distinct images in model A's training set, its repeated ones included"))
    once_b: int = field(default=4000, metadata=helps(
        "distinct images in model B's training set (A's among them), each seen once"))


def model_settings(cfg: TestbedJobConfig) -> dict:
    """The VAE's and UNet's TrainConfig fields the user set (the design's defaults fill
    the others)."""
    given = {"vae_steps": cfg.vae_steps, "latent_channels": cfg.latent_channels,
             "vae_channels": tuple(cfg.vae_channels), "unet_channels": tuple(cfg.unet_channels)}
    return {k: v for k, v in given.items() if v}


def run(cfg: TestbedJobConfig, ctx: JobContext) -> str | None:
    log = ctx.log
    if not set(cfg.models) <= {"A", "B"} or not cfg.models:
        raise ConfigError(f"train_testbed.models must be a subset of [A, B], not {cfg.models}")
    from diffrep.testbed.build import DESIGNS, build_testbed, design_configs

    if cfg.design not in DESIGNS:
        raise ConfigError(f"train_testbed.design must be one of {', '.join(DESIGNS)}, not {cfg.design!r}")
    if cfg.device != "cpu":
        import torch

        if not cfg.device.startswith("cuda") or not torch.cuda.is_available():
            raise ConfigError(f"train_testbed.device is {cfg.device!r}: cpu, or cuda[:N] where "
                              "torch sees a GPU")
    if cfg.unet_channels and (len(cfg.unet_channels) != 2 or any(c % 16 for c in cfg.unet_channels)):
        raise ConfigError(f"train_testbed.unet_channels must be two multiples of 16, not {cfg.unet_channels}")
    try:
        data, train = design_configs(cfg.design, seed=cfg.seed, once_a=cfg.once_a, once_b=cfg.once_b,
                                     object_repeats=cfg.object_repeats, unet_steps=cfg.unet_steps,
                                     threads=cfg.threads, device=cfg.device, **model_settings(cfg))
    except ValueError as e:
        raise ConfigError(f"train_testbed: {e}") from e
    repeated = data.special()
    if cfg.once_a <= repeated or cfg.once_b < cfg.once_a:
        raise ConfigError(f"train_testbed.once_a must be > {repeated} (A's repeated images) and "
                          "train_testbed.once_b >= once_a (B sees A's once-seen images and more)")
    try:
        info = build_testbed(cfg.out_dir, data, train, tuple(cfg.models), vae_from=cfg.vae_from or None)
    except ValueError as e:
        raise ConfigError(f"train_testbed: {e}") from e
    log.info("testbed under %s (its build took %.0f s, build.json)", cfg.out_dir, info["seconds"])
    return f"testbed under {cfg.out_dir}"


JOB = Job("train_testbed", TestbedJobConfig, run, __doc__)
main = JOB.main
