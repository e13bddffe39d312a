"""Embedding whole shards with several models in one pass.

Per shard: a reader thread streams tar members; a pool of decode threads decodes each
image once and runs every model's PIL resize/crop (Pillow releases the GIL for both);
the calling thread batches the prepared arrays and runs the models. The model therefore
never waits on decode as long as decode threads keep ahead, which the bounded queue of
in-flight samples (4 batches deep) ensures.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa

from diffrep import storage
from diffrep.data.images import SkipSample
from diffrep.data.reader import (
    SKIP,
    RawSample,
    Sample,
    UngroupedShardError,
    count_skip,
    iter_raw_samples,
    parse_sample,
)
from diffrep.embed.layout import METADATA_SCHEMA, ModelOutput
from diffrep.models import Embedder, create_embedder
from diffrep.models.base import call_by_shape

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class ModelSpec:
    """How to build one embedder inside a worker (builders travel, models do not)."""

    name: str
    weights: Any = None
    options: dict = field(default_factory=dict)

    def build(self, device: str) -> Embedder:
        return create_embedder(self.name, self.weights, device=device, **self.options)


@dataclass
class ShardResult:
    """What one shard produced, per model: returned to the driver for progress."""

    shard: str
    samples_read: int
    embedded: int
    skipped: dict[str, int]
    notes: dict[str, int]
    seconds: float
    models: list[str]


def prefetch(items: Iterable[T], depth: int) -> Iterator[T]:
    """Iterate `items` in a background thread, `depth` items ahead; re-raises its errors.

    If the consumer stops early, the thread stops too (it never blocks on a full queue).
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(done)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put(exc)

    thread = threading.Thread(target=run, daemon=True, name="shard-reader")
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def ordered_map(pool: ThreadPoolExecutor, fn: Callable[[T], R], items: Iterable[T],
                in_flight: int) -> Iterator[R]:
    """`pool.map` with at most `in_flight` pending calls, results in input order."""
    pending: deque = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= in_flight:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


@dataclass
class _Decoded:
    sample: Sample | None
    prepared: list[np.ndarray] | None
    counts: Counter
    skip: str | None = None


class ShardEmbedder:
    """Embeds shards with a fixed set of models; used directly or as a Ray actor."""

    def __init__(self, specs: list[ModelSpec], root: str, device: str = "cpu",
                 batch_size: int = 64, decode_threads: int = 2, max_pixels: int = 50_000_000,
                 dtype: str = "float16", save_tokens: bool = False, torch_threads: int = 0):
        if torch_threads:
            import torch

            torch.set_num_threads(torch_threads)
        self.embedders = {s.name: s.build(device) for s in specs}
        self.outputs = {s.name: ModelOutput(root, s.name) for s in specs}
        self.batch_size = batch_size
        self.decode_threads = max(1, decode_threads)
        self.max_pixels = max_pixels
        self.dtype = np.dtype(dtype)
        self.save_tokens = save_tokens

    def describe(self) -> dict[str, dict]:
        return {n: e.describe() for n, e in self.embedders.items()}

    def process(self, shard_url: str, shard: str, models: list[str] | None = None) -> ShardResult:
        """Embed one shard with `models` (default: all) and write its outputs atomically,
        stats files last. Re-running a shard rewrites identical files."""
        models = models or list(self.embedders)
        start = time.perf_counter()
        try:
            counts, rows, vectors, tokens = self._run(shard_url, shard, models, grouped=True)
        except UngroupedShardError:
            counts, rows, vectors, tokens = self._run(shard_url, shard, models, grouped=False)
        seconds = time.perf_counter() - start
        skipped = {k[len(SKIP):]: v for k, v in counts.items() if k.startswith(SKIP) and v}
        notes = {k: v for k, v in counts.items() if not k.startswith(SKIP) and v}
        result = ShardResult(shard, len(rows["key"]) + sum(skipped.values()), len(rows["key"]),
                             skipped, notes, seconds, models)
        table = pa.table(rows, schema=METADATA_SCHEMA)
        for name in models:
            self._write(name, shard, shard_url, table, vectors[name], tokens.get(name), result)
        return result

    def _decode(self, raw: RawSample, models: list[str]) -> _Decoded:
        counts: Counter = Counter()
        try:
            sample = parse_sample(raw, counts, self.max_pixels)
            prepared = [self.embedders[m].prepare(sample.image.image) for m in models]
        except SkipSample as skip:
            return _Decoded(None, None, counts, skip.reason)
        return _Decoded(sample, prepared, counts)

    def _run(self, shard_url: str, shard: str, models: list[str], grouped: bool):
        counts: Counter = Counter()
        rows: dict[str, list] = {name: [] for name in METADATA_SCHEMA.names}
        batches: dict[str, list[np.ndarray]] = {m: [] for m in models}
        token_batches: dict[str, list[np.ndarray]] = {m: [] for m in models}
        pending: list[_Decoded] = []

        def flush() -> None:
            for i, m in enumerate(models):
                emb = self.embedders[m]
                arrays = [d.prepared[i] for d in pending]
                if self.save_tokens and emb.has_tokens:
                    pooled, toks = call_by_shape(emb.embed_prepared_tokens, arrays)
                    token_batches[m].append(toks.astype(np.float16))
                else:
                    pooled = call_by_shape(emb.embed_prepared, arrays)
                batches[m].append(pooled.astype(self.dtype))
            for d in pending:
                s = d.sample
                for col, value in (("key", s.key), ("url", s.url), ("caption", s.caption),
                                   ("shard", shard), ("row", s.row), ("width", s.image.width),
                                   ("height", s.image.height), ("sha256", s.sha256),
                                   ("image_offset", s.image_span[0]), ("image_size", s.image_span[1])):
                    rows[col].append(value)
            pending.clear()

        # The reader thread counts into its own Counter (Counter updates are not atomic);
        # it is merged once the thread has finished.
        reader_counts: Counter = Counter()
        raw_samples = prefetch(iter_raw_samples(shard_url, reader_counts, grouped),
                               2 * self.batch_size)
        with ThreadPoolExecutor(self.decode_threads, thread_name_prefix="decode") as pool:
            decode = lambda raw: self._decode(raw, models)  # noqa: E731
            for decoded in ordered_map(pool, decode, raw_samples, 4 * self.batch_size):
                counts.update(decoded.counts)
                if decoded.skip:
                    count_skip(counts, decoded.skip)
                    continue
                pending.append(decoded)
                if len(pending) >= self.batch_size:
                    flush()
        if pending:
            flush()
        counts.update(reader_counts)
        vectors = {m: _concat(batches[m], self.embedders[m].dim, self.dtype) for m in models}
        tokens = {m: np.concatenate(token_batches[m]) for m in models if token_batches[m]}
        return counts, rows, vectors, tokens

    def _write(self, model: str, shard: str, shard_url: str, table: pa.Table,
               vectors: np.ndarray, tokens: np.ndarray | None, result: ShardResult) -> None:
        out = self.outputs[model]
        storage.write_npy(out.embeddings(shard), vectors)
        if tokens is not None:
            storage.write_npy(out.tokens(shard), tokens)
        storage.write_parquet(out.metadata(shard), table)
        seconds = max(result.seconds, 1e-9)
        storage.write_json(out.stats(shard), {
            "shard": shard,
            "input": shard_url,
            "model": self.embedders[model].describe(),
            "dtype": str(vectors.dtype),
            "rows": int(vectors.shape[0]),
            "samples_read": result.samples_read,
            "skipped": result.skipped,
            "notes": result.notes,
            "seconds": round(result.seconds, 3),
            "images_per_second": round(result.embedded / seconds, 2),
            "models_in_pass": result.models,
            "tokens": tokens is not None,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        })


def _concat(parts: list[np.ndarray], dim: int, dtype: np.dtype) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros((0, dim), dtype=dtype)
