"""What a testbed's captions give away without any model (a benchmark, not a test): from
a detectbench results.json (per-caption scores, labels), the ROC AUC of the caption's word
count alone, each detector's AUC among the captions of at least `min_words` words, each
detector's correlation with word count among the negatives, and the detectors' medians
for negatives and positives. Issue 21's goal is that wording (and structure) carry no
label: on the large-data model every detector within AUC 0.40-0.60.

Run: python -m benchmarks.caption_structure --results testbed/v2/detectbench/large-data/results.json,testbed/v2/detectbench/memorizing/results.json --out bench-results/caption-structure.json
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", required=True, help="comma-separated detectbench results.json files")
    ap.add_argument("--min_words", type=int, default=19)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    write_results(args.out, {path: caption_structure(path, args.min_words)
                             for path in args.results.split(",")})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
