"""Prompt sets for scans: captions sampled from the training set, or a file of prompts;
normalised and deduplicated."""

from __future__ import annotations

import os
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from diffrep.config import ConfigError
from diffrep.search.index import IndexHandle

PROMPT_SCHEMA = pa.schema([("prompt_id", pa.int64()), ("prompt", pa.string()),
                           ("source_key", pa.string()), ("source_id", pa.int64())])


def normalise(text: str | None) -> str:
    """Collapse whitespace and strip; the deduplication key of a prompt."""
    return re.sub(r"\s+", " ", text or "").strip()


def _dedup(prompts: list[str], keys: list[str | None], ids: list[int | None], limit: int) -> pa.Table:
    seen: set[str] = set()
    rows: dict[str, list] = {"prompt": [], "source_key": [], "source_id": []}
    for prompt, key, id_ in zip(prompts, keys, ids, strict=True):
        p = normalise(prompt)
        if not p or p in seen:
            continue
        seen.add(p)
        rows["prompt"].append(p)
        rows["source_key"].append(key)
        rows["source_id"].append(id_)
        if len(rows["prompt"]) == limit:
            break
    return pa.table({"prompt_id": pa.array(range(len(rows["prompt"])), pa.int64()), **rows},
                    schema=PROMPT_SCHEMA)


def from_training(handle: IndexHandle, n: int, seed: int) -> pa.Table:
    """Up to `n` distinct captions of training images sampled with `seed`, each with its
    source image's key and index id (only the id-map row groups holding them are read)."""
    rng = np.random.default_rng(seed)
    size = min(handle.ntotal, 4 * n)  # headroom for empty and repeated captions
    ids = rng.choice(handle.ntotal, size=size, replace=False)
    rows = handle.lookup(ids, columns=["key", "caption"])
    return _dedup(rows["caption"].to_pylist(), rows["key"].to_pylist(), ids.tolist(), n)


def from_file(path: str, n: int) -> pa.Table:
    """The first `n` distinct prompts of a .txt (one per line) or .parquet (column
    `prompt` or `caption`; `key` kept as source_key when present) file."""
    if not os.path.exists(path):
        raise ConfigError(f"scan.prompts: {path} does not exist")
    if path.endswith(".txt"):
        with open(path, encoding="utf-8") as f:
            prompts = f.read().splitlines()
        keys = [None] * len(prompts)
    else:
        table = pq.read_table(path)
        column = next((c for c in ("prompt", "caption") if c in table.column_names), None)
        if column is None:
            raise ConfigError(f"scan.prompts: {path} has no column 'prompt' or 'caption' "
                              f"(columns: {table.column_names})")
        prompts = table[column].to_pylist()
        keys = table["key"].to_pylist() if "key" in table.column_names else [None] * len(prompts)
    out = _dedup(prompts, keys, [None] * len(prompts), n)
    if not len(out):
        raise ConfigError(f"scan.prompts: {path} holds no non-empty prompt")
    return out


def with_source_ids(table: pa.Table, handle: IndexHandle) -> pa.Table:
    """Fill source_id from source_key (prompts whose file names their training image), so
    that their generations get the similarity to that image. Unknown keys stay null."""
    keys = [k for k in table["source_key"].to_pylist() if k]
    if not keys:
        return table
    ids = handle.key_to_id(keys)
    column = pa.array([ids.get(k) if k else None for k in table["source_key"].to_pylist()], pa.int64())
    return table.set_column(table.schema.get_field_index("source_id"), "source_id", column)
