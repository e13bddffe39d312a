"""What a testbed's captions give away without any model (a benchmark, not a test): from
a detectbench results.json (per-caption scores, labels), the ROC AUC of the caption's word
count alone, each detector's AUC among the captions of at least `min_words` words, each
detector's correlation with word count among the negatives, and the detectors' medians
for negatives and positives. Issue 21's goal is that wording (and structure) carry no
label: on the large-data model every detector within AUC 0.40-0.60.

With --pools, the same word-count figure straight from testbed pools (pool.json: model A's
designed captions and prompts against its once-seen captions), before any model is
trained.

Run: python -m benchmarks.caption_structure --results testbed/v2/detectbench/large-data/results.json,testbed/v2/detectbench/memorizing/results.json --out bench-results/caption-structure.json
     python -m benchmarks.caption_structure --pools testbed/v2 --out bench-results/caption-structure.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.common import write_results
from diffrep.detect.metrics import roc_auc


def caption_structure(results_json: str, min_words: int) -> dict:
    captions = json.loads(Path(results_json).read_text())["captions"]
    labels = np.array([c["label"] for c in captions], bool)
    words = np.array([len(c["caption"].split()) for c in captions])
    long = words >= min_words
    out = {"captions": len(captions), "positives": int(labels.sum()),
           "words_auc": round(roc_auc(words.astype(float), labels), 4),
           "words_negatives": [int(words[~labels].min()), float(np.median(words[~labels])), int(words[~labels].max())],
           "words_positives": [int(words[labels].min()), float(np.median(words[labels])), int(words[labels].max())],
           "long": {"min_words": min_words, "captions": int(long.sum()), "positives": int(labels[long].sum())},
           "detectors": {}}
    for d in ("dcs", "noise_magnitude", "ecs", "angle_magnitude"):
        v = np.array([c[d] for c in captions], np.float64)
        out["detectors"][d] = {
            "auc": round(roc_auc(v, labels), 4),
            "auc_long_captions": round(roc_auc(v[long], labels[long]), 4),
            "corr_words_negatives": round(float(np.corrcoef(v[~labels], words[~labels])[0, 1]), 3),
            "median_negatives": round(float(np.median(v[~labels])), 4),
            "median_positives": round(float(np.median(v[labels])), 4)}
    return out


def pool_words(pool_dir: str) -> dict:
    """Word counts of a pool's captions by kind, and the ROC AUC of word count alone for
    the designed kinds (memorized, template, object and the prompts) against once-seen."""
    pool = json.loads((Path(pool_dir) / "data" / "pool.json").read_text())
    rows = [(e["kind"], e["caption"]) for e in pool["entries"]]
    rows += [(p["kind"], p["caption"]) for p in pool.get("prompts", [])]
    words = np.array([len(c.split()) for _, c in rows], float)
    designed = np.array([k != "once" for k, _ in rows])
    by_kind = {}
    for kind in sorted({k for k, _ in rows}):
        w = words[[k == kind for k, _ in rows]]
        by_kind[kind] = {"captions": len(w), "min": int(w.min()), "median": float(np.median(w)),
                         "max": int(w.max())}
    return {"words_auc": round(roc_auc(words, designed), 4), "by_kind": by_kind}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", default="", help="comma-separated detectbench results.json files")
    ap.add_argument("--pools", default="", help="comma-separated testbed folders (their data/pool.json)")
    ap.add_argument("--min_words", type=int, default=19)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if not args.results and not args.pools:
        ap.error("give --results, --pools or both")
    out = {path: caption_structure(path, args.min_words) for path in args.results.split(",") if path}
    out.update({f"{path} (pool)": pool_words(path) for path in args.pools.split(",") if path})
    write_results(args.out, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
