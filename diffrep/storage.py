"""Output storage: local paths or fsspec URLs, with atomic file creation.

Every output file is written under a temporary name beside its final path and renamed
into place, so a reader never sees a partial file. On object stores (s3://, gs://) the
rename is a copy + delete; completion is then signalled by the per-shard stats file,
which every writer creates last.
"""

from __future__ import annotations

import io
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

TMP_MARKER = ".tmp-"


def filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """Return the fsspec filesystem for `url` and the path inside it."""
    fs, path = fsspec.core.url_to_fs(url)
    return fs, path


def join(base: str, *parts: str) -> str:
    """Join URL or path components with '/' (works for local paths and fsspec URLs)."""
    out = base.rstrip("/")
    for part in parts:
        out = f"{out}/{part.strip('/')}"
    return out


def exists(url: str) -> bool:
    fs, path = filesystem(url)
    return fs.exists(path)


@contextmanager
def atomic_open(url: str) -> Iterator[io.BufferedWriter]:
    """Open `url` for binary writing; the file appears under its name only on success."""
    fs, path = filesystem(url)
    parent = path.rsplit("/", 1)[0] if "/" in path else "."
    fs.makedirs(parent, exist_ok=True)
    tmp = f"{path}{TMP_MARKER}{uuid.uuid4().hex}"
    try:
        with fs.open(tmp, "wb") as f:
            yield f
            if is_local(fs):
                f.flush()
                os.fsync(f.fileno())
        if is_local(fs):
            os.replace(tmp, path)
        else:
            fs.mv(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            fs.rm(tmp)
        raise


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocol or "local" in protocol


def read_bytes(url: str) -> bytes:
    fs, path = filesystem(url)
    with fs.open(path, "rb") as f:
        return f.read()


def read_range(url: str, start: int, stop: int) -> bytes:
    """Bytes [start, stop) of the file at `url` (one ranged read, local or remote)."""
    if stop <= start:
        return b""
    fs, path = filesystem(url)
    return fs.cat_file(path, start=start, end=stop)


def remove_tree(url: str) -> bool:
    """Delete a folder and everything in it; returns whether it existed."""
    fs, path = filesystem(url)
    if not fs.exists(path):
        return False
    fs.rm(path, recursive=True)
    return True


def write_bytes(url: str, data: bytes) -> None:
    """Atomically write `data` to `url`."""
    with atomic_open(url) as f:
        f.write(data)


def write_json(url: str, obj: Any) -> None:
    """Atomically write `obj` as indented UTF-8 JSON."""
    write_bytes(url, json.dumps(obj, indent=2, sort_keys=True).encode())


def read_json(url: str) -> Any:
    return json.loads(read_bytes(url))


def write_npy(url: str, array: np.ndarray) -> None:
    """Atomically write `array` in .npy format (never pickled: object arrays are refused)."""
    if array.dtype == object:
        raise TypeError(f"refusing to write an object array to {url}")
    with atomic_open(url) as f:  # streamed: no serialized copy of the array in memory
        np.save(f, array, allow_pickle=False)


def read_table(url: str, **kwargs: Any) -> pa.Table:
    """pq.read_table of a file or folder at any fsspec URL (pyarrow alone knows only a
    few protocols: memory://, for one, it refuses). kwargs: columns, filters, ..."""
    import pyarrow.parquet as pq

    fs, path = filesystem(url)
    return pq.read_table(path, filesystem=fs, **kwargs)


def read_schema(url: str) -> pa.Schema:
    """The schema of a parquet file at any fsspec URL."""
    import pyarrow.parquet as pq

    fs, path = filesystem(url)
    with fs.open(path, "rb") as f:
        return pq.read_schema(f)


def write_parquet(url: str, table: pa.Table, row_group_size: int | None = None) -> None:
    """Atomically write a pyarrow table as parquet (zstd; row groups of `row_group_size`
    rows, pyarrow's default when None)."""
    with atomic_open(url) as f:
        pq.write_table(table, f, compression="zstd", row_group_size=row_group_size)


@contextmanager
def parquet_writer(url: str, schema: pa.Schema) -> Iterator[pq.ParquetWriter]:
    """A zstd parquet writer streaming to `url`: the file appears complete when the block
    ends without an error, and not at all otherwise. Memory: one row group's buffers."""
    with atomic_open(url) as f, pq.ParquetWriter(f, schema, compression="zstd") as writer:
        yield writer


def remove_stale_temporaries(dir_url: str) -> int:
    """Delete temporaries left by killed writers in `dir_url`; returns how many."""
    fs, path = filesystem(dir_url)
    if not fs.exists(path):
        return 0
    stale = [p for p in fs.ls(path, detail=False) if TMP_MARKER in p.rsplit("/", 1)[-1]]
    for p in stale:
        fs.rm(p)
    return len(stale)
