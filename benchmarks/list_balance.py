"""How balanced a built index's IVF lists are: per index root, the list sizes summed over
its shard files, faiss's imbalance factor (nlist x sum(size^2) / total^2: a corpus
vector's list holds this many times the mean list's entries, and a query scans as much
more per probed list), the empty lists and the largest, and how the coarse centroids were
trained (index_infos.json).

    python -m benchmarks.list_balance --roots KEEP/10000000,KEEP/30000000 --out bench-results/list-balance.json
"""

from __future__ import annotations

import argparse
import json
import os

import faiss
import numpy as np

from benchmarks.common import write_results
from diffrep import storage
from diffrep.index import lists
from diffrep.index.build import read_index


def balance(root: str, model: str) -> dict:
    base = os.path.join(root, "indexes", model)
    infos, manifest = (storage.read_json(os.path.join(base, name)) for name in ("index_infos.json", "manifest.json"))
    sizes = None
    for shard in manifest["shards"]:
        index = read_index(os.path.join(base, shard["file"]))  # kept: ivf points into it
        ivf = faiss.extract_index_ivf(index)
        here = np.array([ivf.invlists.list_size(i) for i in range(ivf.nlist)], np.int64)
        sizes = here if sizes is None else sizes + here
    return {"root": root, "index_key": infos["index_key"], "ntotal": int(sizes.sum()),
            "coarse_training": infos.get("coarse_training", "one k-means"), "two_level": infos.get("two_level"),
            "train_s": infos["build_seconds"].get("train_s"), "nprobe": infos["nprobe"],
            "recall_at_10": infos["recall_at_10"], "coarse_ef": (infos.get("coarse_quantizer") or {}).get("ef"),
            "list_imbalance": round(lists.imbalance(sizes), 3), "empty_lists": int((sizes == 0).sum()),
            "largest_list": int(sizes.max()), "mean_list": round(float(sizes.mean()), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--roots", required=True, help="comma-separated index roots (a rehearsal's KEEP/N)")
    parser.add_argument("--model", default="sscd_onnx")
    parser.add_argument("--out", default="bench-results/list-balance.json")
    args = parser.parse_args()
    out = {"indexes": []}
    for root in args.roots.split(","):
        out["indexes"].append(balance(root, args.model))
        print(json.dumps(out["indexes"][-1]), flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)) or ".", exist_ok=True)
    write_results(args.out, out)


if __name__ == "__main__":
    main()
