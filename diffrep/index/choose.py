"""Choosing the index: autofaiss's key under the memory budget, then its training cost.

autofaiss (`get_optimal_index_keys_v2`, memory-mappable variants only, since shards are
memory-mapped by search actors) picks the code size and the number of IVF lists that fit
`max_index_memory_usage`. Departures, measured in `make bench`:
- the budget holds the whole sharded index: each of the K shards carries its own coarse
  quantizer and codebooks, so the first of autofaiss's candidates that fits is taken;
- corpora under `exact_below` vectors get `IVF1,Flat`, an exact memory-mappable index;
- PQ codes skip polysemous training (`np`), which autofaiss pays for and never uses;
- the OPQ rotation is dropped when each PQ sub-vector has <= 4 dims (e.g. PQ256 on 512-d):
  there the sub-quantizers already see almost all the structure, and OPQ training is a
  large part of autofaiss's build time (1340 s for 200k x 512 on 2 cores).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from autofaiss.external.metadata import compute_memory_necessary_for_training_wrapper
from autofaiss.external.optimize import get_optimal_index_keys_v2, get_optimal_quantization
from autofaiss.utils.cast import cast_bytes_to_memory_string

from diffrep.config import ConfigError

OPQ_RE = re.compile(r"^OPQ(\d+)_(\d+),(.*)$")
PQ_RE = re.compile(r"PQ(\d+)x\d+")
IVF_RE = re.compile(r"IVF(\d+)")


@dataclass(frozen=True)
class IndexChoice:
    key: str              # faiss factory string that is built
    autofaiss_key: str    # what autofaiss proposed
    estimated_bytes: int  # whole index, all shards (sharded_size)
    train_size: int       # vectors in the training sample
    train_bytes: int      # estimated training memory
    reason: str


def nlist_of(key: str) -> int:
    m = IVF_RE.search(key)
    return int(m.group(1)) if m else 1


def smallest_budget(n: int, dim: int, num_shards: int = 1) -> int:
    """The smallest max_index_memory_usage that holds n x dim in some autofaiss candidate."""
    return min(sharded_size(k, n, dim, num_shards) for k in get_optimal_quantization(n, dim))


def drop_opq(key: str, dim: int) -> str:
    """`key` without its OPQ prefix when that is valid and cheap in recall, else `key`."""
    m = OPQ_RE.match(key)
    if not m:
        return key
    pq = int(m.group(1))
    if dim % pq == 0 and dim // pq <= 4:
        return m.group(3)
    return key


def rewrite_opq(key: str, dim: int, opq: str) -> str:
    """Apply the `opq` policy (auto, keep, drop) to an autofaiss key."""
    m = OPQ_RE.match(key)
    if not m or opq == "keep":
        return key
    if opq == "drop" and dim % int(m.group(1)) == 0:
        return m.group(3)
    return drop_opq(key, dim)


def without_polysemous(key: str) -> str:
    """Mark PQ codes `np`: faiss otherwise runs polysemous training (simulated annealing
    on the codebook order), which autofaiss's search parameters never use (ht=2048) and
    which costs 28x the rest of training (76 s of 78 s for IVF512,PQ64x8 on 24k x 128)."""
    return re.sub(r"PQ(\d+)x(\d+)(?!np|fs)", r"PQ\1x\2np", key)


def sharded_size(key: str, n: int, dim: int, num_shards: int = 1) -> int:
    """Bytes of `key` holding n vectors split over `num_shards` shards: the codes and ids
    once, the coarse quantizer, PQ codebooks and OPQ matrix once per shard."""
    nlist = nlist_of(key)
    opq = OPQ_RE.match(key)
    inner = int(opq.group(2)) if opq else dim
    pq = PQ_RE.search(key)
    code = int(pq.group(1)) if pq else 4 * inner
    per_shard = nlist * inner * 4 + (nlist * 32 * 2 * 4 if "HNSW" in key else 0) \
        + (inner * 256 * 4 if pq else 0) + (dim * inner * 4 if opq else 0) + nlist * 64
    return int(n * (code + 8) + num_shards * per_shard)


def choose_index(n: int, dim: int, max_index_bytes: int, memory_bytes: int,
                 exact_below: int = 20000, index_key: str = "auto", opq: str = "auto",
                 points_per_centroid: int = 64, eval_queries: int = 0,
                 num_shards: int = 1, two_level_lists: int = 0) -> IndexChoice:
    """Pick the index for n vectors of `dim` dims under the budgets (bytes): autofaiss's
    candidates in its order of preference, the first whose size over `num_shards` shards
    fits. Raises ConfigError when none fits, naming the smallest budget that would. The
    training sample is `points_per_centroid` x nlist; one task holds it (and it shrinks to
    fit `memory_bytes`) unless nlist > `two_level_lists` > 0, where no task holds it
    (diffrep.index.two_level) and train_bytes is its largest task's."""
    budget = cast_bytes_to_memory_string(max_index_bytes)
    if index_key != "auto":
        candidates = [(index_key, index_key, "index_key from the config")]
    elif n < exact_below:
        candidates = [("IVF1,Flat", "IVF1,Flat", f"exact search: fewer than exact_below={exact_below} vectors")]
    else:
        keys = get_optimal_index_keys_v2(n, dim, budget, should_be_memory_mappable=True) \
            or get_optimal_quantization(n, dim)[-1:]
        candidates = []
        for auto_key in dict.fromkeys(keys):
            key = rewrite_opq(auto_key, dim, opq)
            reason = "autofaiss get_optimal_index_keys_v2 (memory-mappable)" + (
                ", OPQ dropped" if key != auto_key else "")
            candidates.append((without_polysemous(key), auto_key, reason))
    fitting = [c for c in candidates if sharded_size(c[0], n, dim, num_shards) <= max_index_bytes]
    if not fitting:
        need = min(sharded_size(without_polysemous(k), n, dim, num_shards)
                   for k in get_optimal_quantization(n, dim) + [c[0] for c in candidates])
        raise ConfigError(
            f"index.max_index_memory_usage={budget} cannot hold {n} vectors of {dim} dims in "
            f"{num_shards} shard(s) (smallest candidate {candidates[0][0]}: about "
            f"{cast_bytes_to_memory_string(sharded_size(candidates[0][0], n, dim, num_shards))}); "
            f"the smallest budget that would is {cast_bytes_to_memory_string(need)}")
    key, auto_key, reason = fitting[0]
    size = sharded_size(key, n, dim, num_shards)
    nlist = nlist_of(key)
    room = max(n - eval_queries, 1)
    train_size = min(room, max(nlist * points_per_centroid, 1000 if nlist > 1 else 1))
    if two_level_lists and nlist > two_level_lists:
        from diffrep.index.two_level import task_bytes

        return IndexChoice(key, auto_key, size, train_size, task_bytes(nlist, dim), reason)
    train_bytes = _training_bytes(auto_key, train_size, dim)
    if train_bytes > memory_bytes:
        fit = int(train_size * memory_bytes / train_bytes)
        if fit < 39 * nlist:
            raise ConfigError(
                f"training {key} needs about {cast_bytes_to_memory_string(train_bytes * 39 * nlist / train_size)}"
                f" for its smallest sample (39 x {nlist} vectors), over index.current_memory_available="
                f"{cast_bytes_to_memory_string(memory_bytes)}: raise it")
        train_size, train_bytes = fit, _training_bytes(auto_key, fit, dim)
    return IndexChoice(key, auto_key, size, train_size, train_bytes, reason)


def _training_bytes(key: str, train_size: int, dim: int) -> int:
    """autofaiss's estimate, at least the float32 sample itself (autofaiss returns 0 for
    some keys, e.g. an HNSW coarse quantizer); keys it cannot estimate: the sample and a
    copy."""
    try:
        return max(int(compute_memory_necessary_for_training_wrapper(train_size, key, dim)), train_size * dim * 4)
    except Exception:
        return int(2 * train_size * dim * 4)


def shard_count_for_memory(estimated_bytes: int, memory_bytes: int) -> int:
    """Fewest shards such that merging one fits in `memory_bytes` (with 2x headroom)."""
    return max(1, math.ceil(2 * estimated_bytes / memory_bytes))
