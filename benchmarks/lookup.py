"""Naming search hits: id-map lookups by row group vs by whole slice (figures printed and
written to JSON; not a test).

Every job names its hits through IndexHandle.lookup (id -> key, url, caption). Before
2026-12-02 a lookup read each touched slice's whole id map (all columns) and kept the 4
most recent slices (`git show ab7f7ae:diffrep/search/index.py`); at LAION-2B's 10M-row
slices that is ~2 GB decoded per slice and ~8 GB held. Now id maps are written in row
groups of IDMAP_ROW_GROUP rows and a lookup decodes only the groups holding its ids, only
the columns asked for, with a 128 MB cache (diffrep.search.idmap).

On a synthetic LAION-shaped id map (`--slices` x `--rows_per_slice` rows: 9-digit keys,
~80-char URLs, ~60-char captions), three batch shapes, random ids over the whole corpus:
- scan: 64 generations x k=10 = 640 ids, key + url + caption;
- truth: 640 ids, key only (DCS labelling, the region re-rank, baselines);
- search: 1,024 queries x k=10 = 10,240 ids, key + url + caption.
`row_groups_cold` is the same with no cache (every group decoded afresh), the cost per
group once the corpus's groups far outnumber what 128 MB holds (LAION-2B). Each (layout,
shape) runs in its own process: mean ms per lookup over `--lookups`
lookups after 2 warm-up ones, and the process's peak RSS during the lookups (VmHWM, reset
after the imports) and its rise over the RSS before the first lookup.

Run: python -m benchmarks.lookup --out bench-results/lookup.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.common import peak_rss_mb, rss_mb, write_results
from diffrep.index.build import IDMAP_ROW_GROUP, IDMAP_SCHEMA
from diffrep.index.layout import IndexLayout
from diffrep.index.plan import SliceSpec
from diffrep.search.idmap import IDMAP_CACHE_BYTES, IdMapReader

MODEL = "sscd_onnx"
SHAPES = {"scan": (640, ["key", "url", "caption"]), "truth": (640, ["key"]),
          "search": (10_240, ["key", "url", "caption"])}
WORDS = np.array(["a", "photo", "of", "the", "red", "blue", "dog", "cat", "house", "tree", "on", "in",
                  "with", "at", "beach", "city", "night", "old", "new", "painting", "vintage", "poster",
                  "portrait", "landscape", "mountain", "river", "car", "woman", "man"])


def write_id_maps(root: str, slices: int, rows: int, group_rows: int | None, seed: int) -> list[SliceSpec]:
    """`slices` id maps of `rows` rows each, in row groups of `group_rows` (None: one
    group per slice, as built before), written a chunk at a time."""
    layout = IndexLayout(root, MODEL)
    os.makedirs(os.path.dirname(layout.path(layout.idmap_name(0))), exist_ok=True)
    rng = np.random.default_rng(seed)
    specs = []
    chunk = 250_000
    for s in range(slices):
        path = layout.path(layout.idmap_name(s))
        with pq.ParquetWriter(path, IDMAP_SCHEMA, compression="zstd") as writer:
            tables = []
            for start in range(0, rows, chunk):
                ids = np.arange(s * rows + start, s * rows + min(rows, start + chunk))
                words = WORDS[rng.integers(0, len(WORDS), (len(ids), 10))]
                tables.append(pa.table({
                    "id": ids, "key": [f"{i:09d}" for i in ids],
                    "url": [f"https://images.example-cdn.com/uploads/{h:016x}/{i}-photo-large.jpg"
                            for h, i in zip(rng.integers(0, 2**62, len(ids)), ids, strict=True)],
                    "caption": [" ".join(w) for w in words],
                    "shard": [f"{i // 10_000:05d}" for i in ids], "row": ids % 10_000}, schema=IDMAP_SCHEMA))
            table = pa.concat_tables(tables)
            writer.write_table(table, row_group_size=group_rows or len(table))
        specs.append(SliceSpec(s, (f"{s:05d}",), (rows,), s * rows, rows, 0))
    return specs


class WholeSliceLookup:
    """The lookup before 2026-12-02, for comparison: the touched slices' whole id maps
    (all columns, sorted by id), the 4 most recent kept."""

    def __init__(self, layout: IndexLayout, slices: list[SliceSpec]):
        self.layout, self.slices, self.cache = layout, slices, OrderedDict()

    def lookup(self, ids: np.ndarray, columns: list[str] | None = None) -> pa.Table:
        starts = np.array([s.id_start for s in self.slices])
        which = np.searchsorted(starts, ids, side="right") - 1
        parts, positions = [], []
        for si in np.unique(which):
            sel = np.nonzero(which == si)[0]
            if si not in self.cache:
                self.cache[si] = pq.read_table(self.layout.path(self.layout.idmap_name(si))).sort_by("id")
                while len(self.cache) > 4:
                    self.cache.popitem(last=False)
            self.cache.move_to_end(si)
            parts.append(self.cache[si].take(pa.array(ids[sel] - self.slices[si].id_start)))
            positions.append(sel)
        return pa.concat_tables(parts).take(pa.array(np.argsort(np.concatenate(positions))))


def child(root: str, layout_name: str, shape: str, slices: int, rows: int, lookups: int, seed: int) -> dict:
    """One (layout, shape) in this process: ms per lookup and memory."""
    layout = IndexLayout(os.path.join(root, layout_name.removesuffix("_cold")), MODEL)
    specs = [SliceSpec(s, (f"{s:05d}",), (rows,), s * rows, rows, 0) for s in range(slices)]
    if layout_name == "whole_slice":
        reader = WholeSliceLookup(layout, specs)
    else:  # row_groups_cold: no cache, every group decoded afresh (a corpus far larger than the cache)
        reader = IdMapReader(layout, specs, cache_bytes=0 if layout_name.endswith("_cold") else IDMAP_CACHE_BYTES)
    n, columns = SHAPES[shape]
    rng = np.random.default_rng(seed)
    start_rss = rss_mb()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM: the peak below is the lookups', not the imports'
    for _ in range(2):
        reader.lookup(rng.integers(0, slices * rows, n), columns)
    t0 = time.perf_counter()
    for _ in range(lookups):
        ids = rng.integers(0, slices * rows, n)
        got = reader.lookup(ids, columns)
        assert got["key"].to_pylist()[:3] == [f"{i:09d}" for i in ids[:3]]
    ms = (time.perf_counter() - t0) / lookups * 1000
    peak = peak_rss_mb()
    return {"ms_per_lookup": round(ms, 2), "ids_per_s": round(n / ms * 1000), "peak_rss_mb": round(peak),
            "rss_rise_mb": round(peak - start_rss)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench-results/lookup.json")
    parser.add_argument("--slices", type=int, default=6)
    parser.add_argument("--rows_per_slice", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        root, layout_name, shape = args.child.split(",")
        print(json.dumps(child(root, layout_name, shape, args.slices, args.rows_per_slice, args.lookups,
                               args.seed)))
        return
    out = {"slices": args.slices, "rows_per_slice": args.rows_per_slice, "row_group": IDMAP_ROW_GROUP,
           "lookups": args.lookups, "results": {}}
    with tempfile.TemporaryDirectory() as root:
        t0 = time.perf_counter()
        for name, group_rows in (("whole_slice", None), ("row_groups", IDMAP_ROW_GROUP)):
            write_id_maps(os.path.join(root, name), args.slices, args.rows_per_slice, group_rows, args.seed)
        mb = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs) / 2 / 2**20
        print(f"{args.slices} x {args.rows_per_slice:,} rows, {mb:.0f} MB of id map per layout "
              f"({time.perf_counter() - t0:.0f} s to write)", flush=True)
        out["id_map_mb"] = round(mb)
        print("| shape | ids | layout | ms per lookup | ids/s | peak RSS MB | RSS rise MB |")
        for shape, (n, _) in SHAPES.items():
            for name in ("whole_slice", "row_groups", "row_groups_cold"):
                cmd = [sys.executable, "-m", "benchmarks.lookup", "--child", f"{root},{name},{shape}",
                       "--slices", str(args.slices), "--rows_per_slice", str(args.rows_per_slice),
                       "--lookups", str(args.lookups), "--seed", str(args.seed)]
                r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
                out["results"][f"{shape}/{name}"] = r
                print(f"| {shape} | {n:,} | {name} | {r['ms_per_lookup']} | {r['ids_per_s']:,} | "
                      f"{r['peak_rss_mb']} | {r['rss_rise_mb']} |", flush=True)
    write_results(args.out, out)


if __name__ == "__main__":
    main()
