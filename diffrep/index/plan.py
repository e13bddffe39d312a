"""Planning an index build: slices of whole embedding files and their global id ranges,
and the sample positions (training, eval queries)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from diffrep.index.vectors import EmbeddingFile


@dataclass(frozen=True)
class SliceSpec:
    """Consecutive embedding files whose vectors get ids id_start .. id_start+count-1."""

    slice_id: int
    files: tuple[str, ...]   # embedding shard names
    rows: tuple[int, ...]    # vectors per file
    id_start: int
    count: int
    shard: int = -1          # target shard of indexes built before list partitioning

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> SliceSpec:
        return cls(d["slice_id"], tuple(d["files"]), tuple(d["rows"]), d["id_start"], d["count"],
                   d["shard"])


def make_slices(files: list[EmbeddingFile], rows_per_slice: int, first_slice: int = 0,
                first_id: int = 0) -> list[SliceSpec]:
    """Group files in order into slices of at most `rows_per_slice` vectors (a file larger
    than that is a slice on its own); empty files are left out (nothing to index)."""
    slices: list[SliceSpec] = []
    group: list[EmbeddingFile] = []
    next_id = first_id

    def close() -> None:
        nonlocal next_id, group
        if group:
            count = sum(f.rows for f in group)
            slices.append(SliceSpec(first_slice + len(slices), tuple(f.shard for f in group),
                                    tuple(f.rows for f in group), next_id, count))
            next_id += count
            group = []

    for f in files:
        if f.rows == 0:
            continue
        if group and sum(g.rows for g in group) + f.rows > rows_per_slice:
            close()
        group.append(f)
    close()
    return slices


def slice_rows_for(total: int, num_shards: int, rows_per_slice: int) -> int:
    """Slice size so that there are at least `num_shards` slices when files allow."""
    return max(1, min(rows_per_slice, math.ceil(total / num_shards)))


def sample_positions(total: int, count: int, seed: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """`count` distinct global positions in [0, total), sorted, avoiding `exclude`."""
    rng = np.random.default_rng(seed)
    banned = set() if exclude is None else set(exclude.tolist())
    count = min(count, total - len(banned))
    if count <= 0:
        return np.zeros(0, np.int64)
    if total <= 4 * (count + len(banned)):
        pool = np.setdiff1d(np.arange(total), np.fromiter(banned, np.int64, len(banned)))
        return np.sort(rng.choice(pool, size=count, replace=False))
    chosen: set[int] = set()
    while len(chosen) < count:
        for p in rng.integers(0, total, size=2 * (count - len(chosen))).tolist():
            if p not in banned and len(chosen) < count:
                chosen.add(p)
    return np.sort(np.fromiter(chosen, np.int64, len(chosen)))


def locate(positions: np.ndarray, files: list[EmbeddingFile]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Map global positions (over `files` in order) to (shard, rows, index into positions)."""
    starts = np.cumsum([0] + [f.rows for f in files])[:-1]
    return locate_in(np.asarray(positions, np.int64), starts, [f.shard for f in files])


def file_of(positions: np.ndarray, first: np.ndarray) -> np.ndarray:
    """The file of each position (>= first[0]), files starting at `first` (sorted): by
    division where every file but the last has the same length (one embedding shard size,
    the usual layout), else by binary search (1 and 34 ms per 819k positions over 300
    files, measured)."""
    first = np.asarray(first, np.int64)
    if len(first) > 1:
        stride = int(first[1] - first[0])
        if stride > 0 and (np.diff(first) == stride).all():
            return np.minimum((positions - first[0]) // stride, len(first) - 1)
    return np.searchsorted(first, positions, side="right") - 1


def locate_in(positions: np.ndarray, first: np.ndarray, names: list[str]
              ) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Positions (>= first[0]) -> [(names[f], rows in file f, index into positions)] for
    files whose first positions are `first` (sorted), in file order: one file_of and one
    sort, whatever the number of files."""
    if not len(positions):
        return []
    which = file_of(positions, first)
    # numpy's stable sort of 16-bit integers is a radix sort: O(n), 5x the int64 sort's speed
    order = np.argsort(which.astype(np.uint16) if len(first) <= 1 << 16 else which, kind="stable")
    cuts = np.flatnonzero(np.diff(which[order])) + 1
    out = []
    for sel in np.split(order, cuts):
        f = int(which[sel[0]])
        out.append((names[f], positions[sel] - first[f], sel))
    return out
