"""Whether object-level matching (scan.regions) can work for a scan: region crops of a
tiny image (a 0.5 crop of a 32 px generation is 16 px, upscaled to the descriptor's input)
carry no information, and on the testbed they made 19 of 20 generations of both models
and 99.7% of the baseline "replicated". Below scan.region_min_side regions are switched
off for the scan, with the reason logged and recorded in summary.json."""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger("diffrep")


@dataclass(frozen=True)
class RegionDecision:
    enabled: bool
    reason: str
    min_side: int  # scan.region_min_side, pixels
    smallest_crop: int | None  # smallest region crop side of the smallest generation, pixels

    @property
    def switched_off(self) -> bool:
        """Asked for, but off for this scan (the report says so)."""
        return self.reason.startswith("regions off")

    def as_dict(self) -> dict:
        return {"enabled": self.enabled, "switched_off": self.switched_off, "reason": self.reason,
                "min_side": self.min_side, "smallest_crop": self.smallest_crop}


def decide_regions(configured: bool, resolutions: dict[str, int], scales: list[float],
                   min_side: int) -> RegionDecision:
    """Regions stay as configured unless the smallest generation side in `resolutions`
    ({checkpoint label: pixels}; empty for given images, whose size is not known before
    they are read) is below `min_side`; then they are off and the reason says why."""
    smallest = min(resolutions.values()) if resolutions else None
    crop = int(smallest * min(scales)) if smallest and scales else None
    if not configured:
        return RegionDecision(False, "scan.regions is false", min_side, crop)
    if smallest is None:
        return RegionDecision(True, "scan.regions is true (given images: their size is not "
                              "checked)", min_side, crop)
    if smallest < min_side:
        who = ", ".join(f"{label} {side} px" for label, side in sorted(resolutions.items())
                        if side < min_side)
        return RegionDecision(
            False, f"regions off: generations are smaller than scan.region_min_side = "
                   f"{min_side} px ({who}); their region crops would be {crop} px, too small "
                   f"for the descriptor to tell one object from another. Global similarity "
                   f"only (set scan.region_min_side lower to force regions)", min_side, crop)
    return RegionDecision(True, f"scan.regions is true and every generation is at least "
                          f"{min_side} px", min_side, crop)
