"""Per-checkpoint statistics of a scan against the baseline: share of generations above
the replication threshold, quantiles and histograms of top-1 similarity."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

QUANTILES = (0.5, 0.9, 0.95, 0.99)
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


def summarise(generations: dict[str, pa.Table], baseline: pa.Table, threshold: float,
              model: str, region_baseline: pa.Table | None = None,
              region_threshold: float | None = None) -> dict:
    """`generations`: per checkpoint label, a table with top1_sim and source_sim (and
    region_sim when object-level matching ran: then `region_baseline` and
    `region_threshold` describe it, and `replicated` counts generations above either
    threshold)."""
    out = {"model": model, "threshold": threshold, "bin_edges": BIN_EDGES.tolist(),
           "baseline": describe(_floats(baseline["similarity"]), threshold),
           "checkpoints": {}}
    if region_baseline is not None:
        out["region_threshold"] = region_threshold
        out["region_baseline"] = describe(_floats(region_baseline["region_similarity"]),
                                          region_threshold)
    for label, table in generations.items():
        top1 = _floats(table["top1_sim"])
        out["checkpoints"][label] = {
            "checkpoint": table["checkpoint"][0].as_py() if len(table) else label,
            "generations": len(table), "prompts": len(set(table["prompt"].to_pylist())),
            "top1": describe(top1, threshold),
            "source": describe(_floats(table["source_sim"]), threshold),
        }
        if region_baseline is not None:
            region = _floats(table["region_sim"])
            out["checkpoints"][label]["region"] = describe(region, region_threshold)
            out["checkpoints"][label]["replicated"] = int(
                ((top1 > threshold) | (region > region_threshold)).sum())
    return out
