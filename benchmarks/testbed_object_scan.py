"""Object-level matching of a scan on testbed v2, per caption kind: how many generations
have a region match above the threshold the scan used, above the fixed floor 0.5, and with
their best region in the object kind's training scenes (the right source for the object
kind; a false match for every other kind).

Reads a finished scan run (configs/demo-testbed-v2.yaml with `regions: true`), the testbed
corpus' metadata (each key's kind) and model A's truth (each prompt's kind).

Run: python -m benchmarks.testbed_object_scan --scan data/demo/testbed-v2/out/scans/testbed-fig4-regions \
         --corpus data/demo/testbed-v2/corpus --truth testbed/v2/memorizing/testbed/truth.json \
         --threshold 0.864 --out benchmarks/results/testbed-v2-object-scan.json
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq


def by_kind(rows: list[dict], prompt_kind: dict, key_kind: dict, threshold: float) -> dict:
    out: dict = {}
    for kind in sorted({prompt_kind.get(r["prompt"], "unknown") for r in rows}):
        sel = [r for r in rows if prompt_kind.get(r["prompt"], "unknown") == kind]
        sims = np.array([r["region_sim"] if r["region_sim"] is not None else np.nan for r in sel])
        in_object = [r for r in sel if r["region_key"] and key_kind.get(r["region_key"]) == "object"]
        out[kind] = {"generations": len(sel),
                     "region_sim_median": round(float(np.nanmedian(sims)), 3) if len(sel) else None,
                     "region_sim_max": round(float(np.nanmax(sims)), 3) if len(sel) else None,
                     "above_threshold": int((sims > threshold).sum()),
                     "above_0.5": int((sims > 0.5).sum()),
                     "best_region_in_object_kind": len(in_object),
                     "best_region_in_object_kind_above_threshold": sum(r["region_sim"] > threshold for r in in_object),
                     # matches local features confirmed (the rescue below the threshold, or the veto's check above it)
                     "verified_by_geometry": sum(bool(r.get("region_verified")) for r in sel),
                     "verified_by_source_kind": dict(Counter(key_kind.get(r["region_key"], "unknown")
                                                             for r in sel if r.get("region_verified")))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scan", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--truth", required=True)
    ap.add_argument("--threshold", type=float, required=True,
                    help="region threshold the scan used (its log says it)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    scan = Path(args.scan)
    prompt_kind = {t["caption"]: t["kind"] for t in json.loads(Path(args.truth).read_text())["captions"]}
    key_kind = {m["key"]: m["kind"] for m in pq.read_table(Path(args.corpus) / "metadata.parquet").to_pylist()}
    result = {"scan": str(scan), "threshold": args.threshold, "checkpoints": {}}
    for folder in sorted((scan / "generations").iterdir()):
        rows = [r for f in sorted(folder.glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
        result["checkpoints"][folder.name] = by_kind(rows, prompt_kind, key_kind, args.threshold)
    Path(args.out).write_text(json.dumps(result, indent=1))
    for ck, kinds in result["checkpoints"].items():
        for kind, v in kinds.items():
            print(ck, kind, v)


if __name__ == "__main__":
    main()
