"""The region threshold on a corpus that is not photos (issue 20, part 4): figures printed
and written to JSON; not a test.

A new user's trial, as the jobs run it: a corpus of icons, screenshots and diagrams
(diffrep.data.graphics: Adwaita's installed icons and drawn ones) is sharded, embedded with
the real SSCD and indexed; then a folder of "generations" is scanned against it:

- unrelated: images that copy nothing of the corpus (other installed icons, screenshots,
  diagrams and drawings with other seeds);
- pasted: part of a corpus image pasted into a drawn scene (diffrep.scan.demo.paste_object),
  the object-level copy the region score exists for.

The scan runs once, with the default threshold calibrated on the index's own nulls; a
region score does not depend on the threshold, so its rows give the outcome at the fixed
floor 0.5 too. Printed side by side: how many unrelated images each flags (false share),
how many of those the global score does not, how many pasted copies each finds with the
right source, and the threshold with its nulls.

Run: python -m benchmarks.region_nulls --out benchmarks/results/region-nulls.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq


def build_index(root: Path, corpus: list, samples_per_shard: int = 100) -> None:
    """Shard, embed (real SSCD) and index `corpus` under `root` with the jobs themselves."""
    from diffrep.data.graphics import write_folder
    from diffrep.executor import LocalExecutor
    from diffrep.index.builder import build
    from diffrep.index.config import IndexConfig
    from jobs import embed, shards

    folder = write_folder(root / "corpus", corpus)
    assert shards.main(["--folder", str(folder), "--out_dir", str(root / "shards"),
                        "--samples_per_shard", str(samples_per_shard)]) == 0
    tars = sorted((root / "shards").glob("*.tar"))
    spec = str(root / "shards" / f"{{00000..{len(tars) - 1:05d}}}.tar")
    assert embed.main(["--input", spec, "--root", str(root / "out"), "--models", "[sscd_onnx]",
                       "--batch_size", "16", "--progress_interval_s", "30"]) == 0
    build(IndexConfig(root=str(root / "out"), model="sscd_onnx", num_shards=1, eval_queries=10),
          LocalExecutor())


def scan_folder(root: Path, folder: Path, run: str, unrelated_nulls: int, baseline_size: int
                ) -> tuple[dict, list[dict]]:
    """scan.generated over `folder` with the default (calibrated) region threshold;
    returns (summary, generation rows)."""
    from jobs import scan

    assert scan.main(["--root", str(root / "out"), "--run", run, "--generated", str(folder),
                      "--generated_name", "queries", "--baseline_size", str(baseline_size),
                      "--region_unrelated", str(unrelated_nulls), "--shard_actors", "never"]) == 0
    base = root / "out" / "scans" / run
    summary = json.loads((base / "summary.json").read_text())
    rows = [r for p in sorted((base / "generations" / "queries").glob("*.parquet"))
            for r in pq.read_table(p).to_pylist()]
    return summary, rows


def outcome(rows: list[dict], truth: dict[str, dict], key_of: dict[str, str], threshold: float,
            region_threshold: float, rule=None) -> dict:
    """Flags per query kind at these thresholds (a region score does not depend on the
    threshold, so one scan's rows give both the fixed and the calibrated outcome), or under
    the scan's own RegionRule `rule` (threshold, geometric veto and rescue): an unrelated
    image flagged is a false accusation; a paste counts as found when flagged by its region
    score with its source."""
    out = {"threshold": threshold, "region_threshold": region_threshold, "unrelated": {},
           "pasted": {}}
    for r in rows:
        name = r["gen_id"].rsplit("/", 1)[1].rsplit(".", 1)[0]
        t = truth[name]
        region = r["region_sim"] or 0.0
        entry = {"what": t["what"], "global_flag": bool(r["top1_sim"] > threshold),
                 "region_flag": bool(region > region_threshold) if rule is None else
                 rule.verdict(region, r.get("region_verified")).startswith("copy"),
                 "top1_sim": round(r["top1_sim"], 4), "region_sim": round(region, 4),
                 "region_key": r["region_key"], "region_verified": r.get("region_verified")}
        if t["kind"] == "pasted":
            entry["right_source"] = r["region_key"] == key_of[t["what"]]
        out[t["kind"]][name] = entry
    u, p = list(out["unrelated"].values()), list(out["pasted"].values())
    out["unrelated_region_flagged"] = sum(e["region_flag"] for e in u)
    out["unrelated_global_flagged"] = sum(e["global_flag"] for e in u)
    out["unrelated_region_flagged_not_global"] = sum(e["region_flag"] and not e["global_flag"] for e in u)
    out["unrelated_max_region"] = max((e["region_sim"] for e in u), default=None)
    out["unrelated_max_global"] = max((e["top1_sim"] for e in u), default=None)
    out["pasted_found"] = sum(e["region_flag"] and e["right_source"] for e in p)
    out["pasted_right_source"] = sum(e["right_source"] for e in p)
    return out


def run(corpus_size: int, unrelated: int, pasted: int, unrelated_nulls: int, baseline_size: int,
        seed: int, tmp: str) -> dict:
    import ray

    from diffrep.data.graphics import KINDS, graphics, write_trial_queries
    from diffrep.search.region_rule import RegionRule

    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False,
             logging_level="WARNING")
    root = Path(tmp)
    corpus = graphics(corpus_size, seed=seed)
    t0 = time.perf_counter()
    build_index(root, corpus)
    t_index = time.perf_counter() - t0
    truth = write_trial_queries(corpus, root / "queries", unrelated, pasted, seed)
    meta = pq.read_table(root / "shards" / "metadata.parquet").to_pylist()
    key_of = {Path(m["source"]).stem: m["key"] for m in meta}
    t0 = time.perf_counter()
    summary, rows = scan_folder(root, root / "queries", "graphics", unrelated_nulls, baseline_size)
    results = {"corpus": {"images": len(corpus), "by_kind": {
        k: sum(1 for _, kind, _ in corpus if kind == k) for k in KINDS}},
        "queries": {"unrelated": unrelated, "pasted": pasted}, "index_seconds": round(t_index, 1),
        "scan_seconds": round(time.perf_counter() - t0, 1),
        "baseline": summary["baseline"], "region_baseline": summary["region_baseline"],
        "warnings": summary["warnings"], "calibration": summary["region_calibration"],
        "region_rule": summary["region_rule"]}
    rule = RegionRule(**summary["region_rule"])
    for label, region_thr, by_rule in (("fixed 0.5", 0.5, None),
                                       ("fixed", summary["region_calibration"]["floor"], None),
                                       ("calibrated", summary["region_threshold"], None),
                                       ("calibrated + geometric rescue", summary["region_threshold"], rule)):
        r = results[label] = outcome(rows, truth, key_of, summary["threshold"], region_thr, by_rule)
        print(f"{label:>10}: region threshold {region_thr:.3f}: unrelated flagged by region "
              f"{r['unrelated_region_flagged']}/{unrelated} ({r['unrelated_region_flagged_not_global']} "
              f"of them not by the global score; max region {r['unrelated_max_region']}), pasted "
              f"found {r['pasted_found']}/{pasted} (right source {r['pasted_right_source']})", flush=True)
    print("calibration:", summary["region_calibration"]["reason"], flush=True)
    rescue = summary["region_rule"]["rescue"]
    print(f"geometric rescue {'on' if rescue.get('enabled') else 'off'}:", rescue.get("reason"), flush=True)
    ray.shutdown()
    return results


def main() -> None:
    from benchmarks.common import write_results

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus_size", type=int, default=220)
    ap.add_argument("--unrelated", type=int, default=12)
    ap.add_argument("--pasted", type=int, default=6)
    ap.add_argument("--unrelated_nulls", type=int, default=32)
    ap.add_argument("--baseline_size", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench-results/region-nulls.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = run(args.corpus_size, args.unrelated, args.pasted, args.unrelated_nulls,
                      args.baseline_size, args.seed, tmp)
    write_results(args.out, {"benchmark": "region_nulls", "args": vars(args), **results})


if __name__ == "__main__":
    main()
