"""The index manifest: sha256 and size of every file, written last (the commit).

`verify` checks files against it before anything is loaded, so a truncated, tampered or
missing file is refused by name instead of being handed to faiss's reader.
"""

from __future__ import annotations

import hashlib

from diffrep import storage
from diffrep.config import InputError

CHUNK = 8 << 20


class IndexIntegrityError(InputError, RuntimeError):
    """An index file is missing, truncated or does not match the manifest."""


def file_digest(url: str) -> tuple[str, int]:
    """(sha256 hex, size in bytes) of a file, streamed in 8 MiB chunks."""
    fs, path = storage.filesystem(url)
    h, size = hashlib.sha256(), 0
    with fs.open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def describe_files(base: str, names: list[str]) -> dict[str, dict]:
    out = {}
    for name in names:
        digest, size = file_digest(storage.join(base, name))
        out[name] = {"sha256": digest, "bytes": size}
    return out


def verify(base: str, manifest: dict, names: list[str] | None = None) -> None:
    """Check `names` (default: every file in the manifest) under `base`.

    Raises IndexIntegrityError naming the first bad file and what to do.
    """
    files = manifest["files"]
    for name in names if names is not None else sorted(files):
        if name not in files:
            raise IndexIntegrityError(f"{storage.join(base, name)} is not listed in the manifest")
        url = storage.join(base, name)
        fs, path = storage.filesystem(url)
        if not fs.exists(path):
            raise IndexIntegrityError(
                f"{url} is missing (listed in manifest.json): restore it or rebuild the index "
                f"with jobs.build_index --overwrite true")
        expected = files[name]
        size = fs.size(path)
        if size != expected["bytes"]:
            raise IndexIntegrityError(
                f"{url} is {size} bytes, the manifest says {expected['bytes']} (truncated or "
                f"replaced): restore it or rebuild the index")
        digest, _ = file_digest(url)
        if digest != expected["sha256"]:
            raise IndexIntegrityError(
                f"{url} does not match its sha256 in manifest.json (modified or corrupted): "
                f"refusing to load it; restore it or rebuild the index")
