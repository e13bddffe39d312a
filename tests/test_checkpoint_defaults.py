"""Settings that depend on the checkpoint come from it (issue 26, item 2): the testbed's
memorizing model makes 32 px images (UNet sample_size 16 x VAE scale 2), so a job that
leaves resolution null generates at 32 px, and an explicit 512 is logged beside the 32."""

from __future__ import annotations

import logging
from pathlib import Path

from diffrep.diffusion.native import native_settings, resolve_resolution
from diffrep.diffusion.pipelines import resolve_checkpoint
from diffrep.rank.config import RankConfig
from diffrep.scan.config import ScanConfig
from diffrep.scan.run import per_checkpoint
from diffrep.scan.worker import GenerationSettings

TESTBED = Path(__file__).resolve().parents[1] / "testbed"


def test_native_settings_of_the_testbed_model():
    native = native_settings(resolve_checkpoint(str(TESTBED / "memorizing")))
    assert (native.unet_sample_size, native.vae_scale_factor, native.resolution) == (16, 2, 32)
    assert native.latent_channels == 4
    assert (native.scheduler, native.prediction_type) == ("DDIMScheduler", "epsilon")


def test_resolution_defaults_to_the_checkpoint_and_a_disagreeing_value_is_logged(caplog):
    assert RankConfig().resolution is None and ScanConfig().resolution is None
    ckpt = resolve_checkpoint(str(TESTBED / "memorizing"))
    with caplog.at_level(logging.INFO, logger="diffrep"):
        assert resolve_resolution(None, ckpt, "dcs.resolution") == 32
    assert "dcs.resolution: null -> 32 px" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="diffrep"):
        assert resolve_resolution(512, ckpt, "dcs.resolution") == 512  # the user's choice stands
    warning = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning and "dcs.resolution = 512 px" in warning[0].getMessage()
    assert "trained at 32 px" in warning[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="diffrep"):
        resolve_resolution(32, ckpt, "dcs.resolution")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_scan_takes_each_checkpoints_own_resolution(caplog):
    ckpts = [resolve_checkpoint(str(TESTBED / name)) for name in ("memorizing", "large-data")]
    cfg = ScanConfig(checkpoints=[c.name for c in ckpts], scheduler="euler")
    with caplog.at_level(logging.INFO, logger="diffrep"):
        gens = per_checkpoint(cfg, GenerationSettings(), ckpts)
    assert {label: g.resolution for label, g in gens.items()} == {"memorizing": 32, "large-data": 32}
    assert "scan.scheduler = euler replaces" in caplog.text and "DDIMScheduler" in caplog.text
