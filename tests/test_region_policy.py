"""Region matching knows when it cannot work (issue 26, item 3): a scan of 32 px
generations switches regions off with the reason; 512 px keeps them."""

from __future__ import annotations

from diffrep.scan.config import ScanConfig
from diffrep.scan.region_policy import decide_regions


def test_regions_are_switched_off_below_the_minimum_side_with_a_reason():
    cfg = ScanConfig()
    assert cfg.regions and cfg.region_min_side == 128
    scales = cfg.region_spec(cfg.model).scales  # SSCD ONNX by default: pooled, 0.2 the smallest
    off = decide_regions(True, {"memorizing": 32, "large-data": 32}, scales,
                         cfg.region_min_side)
    assert not off.enabled and off.switched_off and off.smallest_crop == 6
    assert "memorizing 32 px" in off.reason and "scan.region_min_side = 128 px" in off.reason
    assert off.as_dict()["switched_off"] is True
    on = decide_regions(True, {"sd": 512}, scales, cfg.region_min_side)
    assert on.enabled and not on.switched_off
    # asked off stays off, not "switched off"; forced on with a lower minimum
    assert not decide_regions(False, {"sd": 512}, scales, 128).switched_off
    assert decide_regions(True, {"m": 32}, scales, 0).enabled
    # given images: size unknown before reading them, regions as configured
    assert decide_regions(True, {}, scales, 128).enabled


def test_region_descriptors_resolve_per_model_and_pooled_is_refused_where_it_cannot_pool():
    import pytest

    from diffrep.config import ConfigError
    from diffrep.search.regions import CROP_SCALES, POOLED_SCALES

    cfg = ScanConfig()
    pooled, cropped = cfg.region_spec("sscd_onnx"), cfg.region_spec("dino_vitb16")
    assert (pooled.descriptors, pooled.scales, pooled.floor) == ("pooled", POOLED_SCALES, 0.65)
    assert (cropped.descriptors, cropped.scales, cropped.floor) == ("crops", CROP_SCALES, 0.5)
    assert cropped.pooled_side == cropped.segment_side == 0
    with pytest.raises(ConfigError, match="region_descriptors: pooled needs .* not dino_vitb16"):
        ScanConfig(region_descriptors="pooled").region_spec("dino_vitb16")
