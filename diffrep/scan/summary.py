"""Per-checkpoint statistics of a scan against the baseline: share of generations above
the replication threshold, quantiles and histograms of top-1 similarity."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from diffrep.search.calibration import RegionCalibration
from diffrep.search.region_rule import RegionRule

QUANTILES = (0.5, 0.9, 0.95, 0.99)
UNINFORMATIVE_SHARE = 0.5  # a baseline with more than this share above threshold cannot separate
BIN_EDGES = np.round(np.linspace(0.0, 1.0, 21), 2)  # similarity bins of 0.05; below 0 -> first


def histogram(sims: np.ndarray) -> list[float]:
    """Fractions of `sims` per BIN_EDGES bin (values outside [0, 1] go to the end bins)."""
    sims = np.clip(np.asarray(sims, np.float64), 0.0, 1.0)
    sims = sims[~np.isnan(sims)]
    counts, _ = np.histogram(sims, bins=BIN_EDGES)
    return (counts / max(len(sims), 1)).round(5).tolist()


def describe(sims: np.ndarray, threshold: float) -> dict:
    sims = np.asarray(sims, np.float64)
    sims = sims[~np.isnan(sims)]
    if not len(sims):
        return {"count": 0}
    return {"count": int(len(sims)), "above_threshold": int((sims > threshold).sum()),
            "share_above_threshold": round(float((sims > threshold).mean()), 5),
            "mean": round(float(sims.mean()), 5), "max": round(float(sims.max()), 5),
            "quantiles": {str(q): round(float(np.quantile(sims, q)), 5) for q in QUANTILES},
            "histogram": histogram(sims)}


def _floats(column: pa.ChunkedArray) -> np.ndarray:
    return column.to_numpy(zero_copy_only=False).astype(np.float64)  # nulls -> nan


def baseline_warning(name: str, stats: dict, threshold: float, limit: float) -> str | None:
    """A warning when more than `limit` of a baseline (training image against the rest of
    the training set) is above `threshold`: then being above it says nothing about a
    generation, and comparing a checkpoint with the baseline is uninformative."""
    share = stats.get("share_above_threshold")
    if share is None or share <= limit:
        return None
    return (f"{100 * share:.1f}% of the {name} ({stats['above_threshold']} of {stats['count']} "
            f"training images against the rest of the training set) is above the threshold "
            f"{threshold}: this index cannot tell a copy from an ordinary image at that "
            f"threshold (near-duplicates, a tiny or uniform training set, or a descriptor that "
            f"does not separate its images), so the comparison of each checkpoint with the "
            f"baseline is uninformative. Raise the threshold, or read the generation/training "
            f"pairs themselves.")


def summarise(generations: dict[str, pa.Table], baseline: pa.Table, threshold: float,
              model: str, region_baseline: pa.Table | None = None,
              region_calibration: RegionCalibration | None = None,
              uninformative_share: float = UNINFORMATIVE_SHARE,
              region_rule: RegionRule | None = None) -> dict:
    """`generations`: per checkpoint label, a table with top1_sim and source_sim (and
    region_sim when object-level matching ran: then `region_baseline` describes it,
    `region_calibration` gives the region threshold that decides and why
    (`region_threshold`, `region_calibration` in the summary), `region_rule` which region
    matches count given geometric verification (default: above the threshold, no veto, no
    rescue; `region_rule` in the summary), and `replicated` counts generations above the
    global threshold or that the rule calls copies). `warnings` (listed first) names a baseline with more than
    `uninformative_share` above its threshold; each checkpoint's `baseline_comparison`
    ("informative" or "uninformative", and `region_baseline_comparison`) says whether its
    comparison with that baseline means anything."""
    out = {"warnings": [], "model": model, "threshold": threshold,
           "bin_edges": BIN_EDGES.tolist(),
           "baseline": describe(_floats(baseline["similarity"]), threshold),
           "checkpoints": {}}
    flags = {"baseline": baseline_warning("baseline", out["baseline"], threshold, uninformative_share)}
    if region_baseline is not None:
        region_threshold = region_calibration.threshold
        region_rule = region_rule or RegionRule(region_threshold)
        out["region_threshold"] = region_threshold
        out["region_calibration"] = region_calibration.as_dict()
        out["region_rule"] = region_rule.as_dict()
        out["region_baseline"] = describe(_floats(region_baseline["region_similarity"]),
                                          region_threshold)
        flags["region_baseline"] = baseline_warning("region baseline (region scores)",
                                                    out["region_baseline"], region_threshold,
                                                    uninformative_share)
    for name, warning in flags.items():
        out[name]["uninformative"] = warning is not None
        if warning:
            out["warnings"].append(warning)
    for label, table in generations.items():
        top1 = _floats(table["top1_sim"])
        out["checkpoints"][label] = {
            "checkpoint": table["checkpoint"][0].as_py() if len(table) else label,
            "generations": len(table), "prompts": len(set(table["prompt"].to_pylist())),
            "top1": describe(top1, threshold),
            "source": describe(_floats(table["source_sim"]), threshold),
            "baseline_comparison": "uninformative" if flags["baseline"] else "informative",
        }
        if region_baseline is not None:
            region = _floats(table["region_sim"])
            out["checkpoints"][label]["region"] = describe(region, region_threshold)
            out["checkpoints"][label]["region_baseline_comparison"] = (
                "uninformative" if flags["region_baseline"] else "informative")
            verified = table["region_verified"].to_pylist() if "region_verified" in table.column_names \
                else [None] * len(table)
            region_hit = region_rule.copies(region, verified)
            above = region > region_threshold
            out["checkpoints"][label]["replicated"] = int(((top1 > threshold) | region_hit).sum())
            out["checkpoints"][label]["region_rejected_by_geometry"] = int((above & ~region_hit).sum())
            out["checkpoints"][label]["region_rescued_by_geometry"] = int((~above & region_hit).sum())
    return out
