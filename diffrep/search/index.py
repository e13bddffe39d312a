"""A committed index, opened from its manifest: shard files verified by sha256, id map and
stored embeddings looked up by global id."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from diffrep import storage
from diffrep.embed.layout import ModelOutput
from diffrep.index.keys import resolve as resolve_keys
from diffrep.index.layout import IndexLayout
from diffrep.index.manifest import IndexIntegrityError, verify
from diffrep.index.plan import SliceSpec
from diffrep.index.vectors import load_npy
from diffrep.report.images import fetch_corpus_images
from diffrep.search.idmap import IdMapReader
from diffrep.search.stored import StoredVectors

log = logging.getLogger("diffrep")
_warned_no_key_index = False


@dataclass
class IndexHandle:
    """A committed index. Memory: the manifest, and the id-map row groups `lookup` keeps
    (diffrep.search.idmap: at most IDMAP_CACHE_BYTES, whatever the corpus)."""

    layout: IndexLayout
    manifest: dict
    infos: dict
    slices: list[SliceSpec]
    idmap: IdMapReader = field(init=False, repr=False)
    stored: StoredVectors = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.idmap = IdMapReader(self.layout, self.slices)
        self.stored = StoredVectors(self.layout.root, self.manifest["model"], self.slices)

    @property
    def model(self) -> str:
        return self.manifest["model"]

    @property
    def dim(self) -> int:
        return self.manifest["dim"]

    @property
    def ntotal(self) -> int:
        return self.manifest["ntotal"]

    def shard_files(self) -> list[str]:
        return [s["file"] for s in self.manifest["shards"]]

    def verify_shards(self) -> None:
        """Check the shard files against the manifest (open_index(verify_files="metadata")
        leaves them to whoever loads them)."""
        verify(self.layout.base, self.manifest, self.shard_files())

    def shard_url(self, name: str) -> str:
        return self.layout.path(name)

    def locate(self, ids: np.ndarray) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """Global ids -> [(embedding shard, rows, positions in ids)]."""
        return self.stored.locate(ids)

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """Stored embeddings of `ids`, float32 (N, dim)."""
        return self.stored.vectors(ids, self.dim)

    def dots(self, ids: np.ndarray, queries: np.ndarray, query_of: np.ndarray) -> np.ndarray:
        """Exact inner products of the pairs (stored vector ids[i], queries[query_of[i]])."""
        return self.stored.dots(ids, queries, query_of)

    def probes(self, slice_id: int) -> np.ndarray | None:
        """The probed lists the add recorded for the slice's vectors (diffrep.index.probes):
        (count, STORED_PROBES) int32 in id order, memory-mapped; None for an index built
        before it recorded them."""
        name = self.layout.probes_name(slice_id)
        return load_npy(self.layout.path(name)) if name in self.manifest["files"] else None

    def tokens(self, ids: np.ndarray) -> np.ndarray:
        """Stored patch tokens of `ids` (N, T, d): the embed job's save_tokens output."""
        emb = ModelOutput(self.layout.root, self.model)
        out = None
        for shard, rows, sel in self.locate(ids):
            url = emb.tokens(shard)
            if not storage.exists(url):
                raise FileNotFoundError(f"{url} is missing: split-product re-rank needs the embed "
                                        f"job's tokens (embed.save_tokens: true, a token model)")
            tokens = self.stored.array(url)
            if out is None:
                out = np.empty((len(ids),) + tokens.shape[1:], np.float32)
            out[sel] = tokens[rows]
        return out

    def keys_by_shard(self, ids: Sequence[int], keys: Sequence[str]) -> dict[str, set[str]]:
        """{embedding shard: keys} of `ids`, whose corpus keys are `keys` (same order): what
        diffrep.report.images.fetch_corpus_images takes."""
        out: dict[str, set[str]] = {}
        for shard, _, sel in self.locate(np.asarray(ids, np.int64)):
            out.setdefault(shard, set()).update(keys[i] for i in sel)
        return out

    def corpus_images(self, ids: Sequence[int], keys: Sequence[str] | None = None) -> dict[str, Image.Image]:
        """Training images of `ids` by corpus key, read back from the corpus tars (ranged
        reads, diffrep.report.images); `keys`: theirs when known, else looked up. Images
        that cannot be read are left out."""
        if keys is None:
            keys = self.lookup(np.asarray(ids, np.int64), columns=["key"])["key"].to_pylist()
        return fetch_corpus_images(self.layout.root, self.model, self.keys_by_shard(ids, keys))

    def lookup(self, ids: np.ndarray, columns: Sequence[str] | None = None) -> pa.Table:
        """id map rows (id, key, url, caption, shard, row; or only `columns`) of `ids`, in
        the order given; id -1 (no result) gives a row of nulls. Reads only the id-map row
        groups that hold the ids (diffrep.search.idmap)."""
        return self.idmap.lookup(ids, columns)

    def key_to_id(self, keys: list[str]) -> dict[str, int]:
        """Global ids of corpus keys; absent keys are left out, a key held twice gives its
        smallest id. Reads only the key-index parts the keys hash to; an index committed
        before the key index existed falls back to scanning every id map (warned once)."""
        if self.manifest.get("key_files"):
            return resolve_keys(self.layout, self.manifest["key_files"], list(keys))
        global _warned_no_key_index
        if not _warned_no_key_index:
            log.warning("index %s has no key index (built before it existed): key lookups scan "
                        "every id map; rebuild it (jobs.build_index --overwrite true) at scale",
                        self.layout.base)
            _warned_no_key_index = True
        wanted = pa.array(keys, pa.string())
        out: dict[str, int] = {}
        for s in self.slices:
            t = storage.read_table(self.layout.idmap(s.slice_id), columns=["key", "id"])
            hit = t.filter(pc.is_in(t["key"], value_set=wanted)).sort_by("id")
            for key, id_ in zip(hit["key"].to_pylist(), hit["id"].to_pylist(), strict=True):
                out.setdefault(key, id_)
        return out


def open_index(root: str, model: str, verify_files: bool | str = True) -> IndexHandle:
    """Open the committed index of `model` under `root`.

    verify_files: True checks every file's sha256 against the manifest; "metadata" checks
    all but the shard files (each search actor then checks its own shard); False trusts.
    Raises IndexIntegrityError naming a missing, truncated or tampered file.
    """
    layout = IndexLayout(root, model)
    if not storage.exists(layout.manifest):
        raise IndexIntegrityError(
            f"no committed index at {layout.base} (manifest.json missing): run "
            f"`python -m jobs.build_index --root {root} --model {model}` first")
    manifest = storage.read_json(layout.manifest)
    if manifest.get("model") != model:
        raise IndexIntegrityError(f"{layout.manifest} is an index of {manifest.get('model')!r}, "
                                  f"not {model!r}")
    if verify_files:
        names = sorted(manifest["files"])
        if verify_files == "metadata":
            shard_names = {s["file"] for s in manifest["shards"]}
            names = [n for n in names if n not in shard_names]
        verify(layout.base, manifest, names)
    infos = storage.read_json(layout.infos)
    slices = [SliceSpec.from_json(s) for s in manifest["slices"]]
    return IndexHandle(layout, manifest, infos, slices)
