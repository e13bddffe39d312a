"""Which region matches count as copies once geometric verification has run (issue 20).

The region threshold (diffrep.search.calibration) sits above every null of the index, so
copies that mix their source with other content (segmix, small pastes) often score just
under it. Geometric verification (diffrep.search.geometry: SIFT + RANSAC) separates them
from nulls there: on 42 photos, 101 null pairs scoring within 0.2 below the floor verified
0 times while a third of the segmix copies and most pasted objects in that band verified
(docs/benchmarks.md, "Geometric verification below the floor"). On simple graphics the
opposite can hold (icon variants share their geometry), so the rescue is calibrated per
index like the threshold: the index's own nulls scoring in the band are verified, and the
rescue is on only when at least MIN_BAND_NULLS of them were tested and none verified.
A null whose match is an identical region (Verification.identical_region: the same pixels
in both, as when two training images share one pasted icon) is no null: the two images
share that part, and geometry was right. It is left out (counted as `nulls_sharing_region`)
rather than turning the rescue off.

A match then counts as a copy when
- its region score is above the threshold (and, with the veto, geometry did not reject it), or
- the rescue is on, its score is in (threshold - band, threshold] and geometry verified it.

Memory: a few floats and booleans per null (sample sizes are config, not corpus).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

MIN_BAND_NULLS = 10  # nulls in the band that must be verified (and fail) before the rescue is on


@dataclass(frozen=True)
class RegionRule:
    """threshold: the region score above which a match is a copy; veto: a match above it
    that geometry rejected is not; rescue_from: a match scoring in (rescue_from, threshold]
    that geometry verified is a copy (None: no rescue); rescue: how the rescue was decided
    (band, nulls tested and verified per null set, reason)."""

    threshold: float
    veto: bool = False
    rescue_from: float | None = None
    rescue: dict = field(default_factory=dict)

    def copies(self, sims: np.ndarray, verified: Sequence[bool | None]) -> np.ndarray:
        """Boolean per match: a copy under this rule. sims: region scores (NaN: none);
        verified: geometry's outcome per match (None: not verified)."""
        sims = np.asarray(sims, np.float64)
        ok = np.array([v is True for v in verified], bool)
        rejected = np.array([v is False for v in verified], bool)
        above = sims > self.threshold
        hit = above & ~rejected if self.veto else above
        if self.rescue_from is not None:
            hit |= (sims > self.rescue_from) & ~above & ok
        return hit

    def verdict(self, sim: float | None, verified: bool | None) -> str:
        """A few words for the report: "copy", "copy: verified below the threshold",
        "rejected by geometry" or "" (below the threshold)."""
        if sim is None or np.isnan(sim):
            return ""
        if sim > self.threshold:
            return "rejected by geometry" if self.veto and verified is False else "copy"
        if self.rescue_from is not None and sim > self.rescue_from and verified is True:
            return "copy: verified below the threshold"
        return ""

    def as_dict(self) -> dict:
        return asdict(self)


def null_outcomes(verifications: dict[str, Sequence]) -> tuple[dict[str, list[bool]], dict[str, int]]:
    """Per null set, from geometry's Verification of each null in the band: whether it
    verified (the nulls that count), and how many matched an identical region instead
    (left out: those images share that part)."""
    verified = {name: [bool(v.verified) for v in vs if not v.identical_region] for name, vs in verifications.items()}
    shared = {name: sum(bool(v.identical_region) for v in vs) for name, vs in verifications.items()}
    return verified, shared


def decide_rescue(threshold: float, band: float, null_verified: dict[str, Sequence[bool]],
                  min_nulls: int = MIN_BAND_NULLS, sharing: dict[str, int] | None = None
                  ) -> tuple[float | None, dict]:
    """The rescue's lower bound (None: off) and its record. `null_verified`: per null set,
    geometry's outcome for each of its nulls scoring in (threshold - band, threshold];
    `sharing`: per null set, the nulls left out because their match is an identical
    region (null_outcomes)."""
    lo = round(threshold - band, 4)
    tested = {name: len(v) for name, v in null_verified.items()}
    verified = {name: int(sum(bool(x) for x in v)) for name, v in null_verified.items()}
    n, bad = sum(tested.values()), sum(verified.values())
    record = {"band": [lo, threshold], "nulls_in_band": tested, "nulls_verified": verified,
              "nulls_sharing_region": dict(sharing or {}), "min_nulls": min_nulls}
    counts = ", ".join(f"{name}: {verified[name]} of {tested[name]}" for name in tested) or "none"
    if sum((sharing or {}).values()):
        counts += (f"; {sum(sharing.values())} more left out: their match is an identical "
                   "region, a part both images share")
    if band <= 0:
        return None, {**record, "enabled": False, "reason": "region_rescue_band is 0"}
    if bad:
        return None, {**record, "enabled": False, "reason": (
            f"{bad} of this index's {n} nulls scoring in ({lo:g}, {threshold:g}] "
            f"verified geometrically ({counts}), so on this index geometry does not tell a "
            f"copy from a null there; only scores above {threshold:g} count")}
    if n < min_nulls:
        return None, {**record, "enabled": False, "reason": (
            f"only {n} of this index's nulls score in ({lo:g}, {threshold:g}] "
            f"(at least {min_nulls} must be verified, and fail, before verified matches in "
            f"that band count)")}
    return lo, {**record, "enabled": True, "reason": (
        f"a region match scoring in ({lo:g}, {threshold:g}] counts as a copy when "
        f"verified geometrically; none of this index's {n} nulls in that band verified "
        f"({counts})")}
