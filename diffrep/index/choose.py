"""Choosing the index: autofaiss's key under the memory budget, then its training cost.

autofaiss (`get_optimal_index_keys_v2`, memory-mappable variants only, since shards are
memory-mapped by search actors) picks the code size and the number of IVF lists that fit
`max_index_memory_usage`. Two departures, both measured in `make bench`:
- corpora under `exact_below` vectors get `IVF1,Flat`, an exact memory-mappable index;
- the OPQ rotation is dropped when each PQ sub-vector has <= 4 dims (e.g. PQ256 on 512-d):
  there the sub-quantizers already see almost all the structure, and OPQ training is most
  of autofaiss's build time (1340 s of OPQ256_768 for 200k x 512 on 2 cores).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from autofaiss.external.metadata import IndexMetadata, compute_memory_necessary_for_training_wrapper
from autofaiss.external.optimize import get_optimal_index_keys_v2, get_optimal_quantization
from autofaiss.utils.cast import cast_bytes_to_memory_string

from diffrep.config import ConfigError

OPQ_RE = re.compile(r"^OPQ(\d+)_(\d+),(.*)$")
PQ_RE = re.compile(r"PQ(\d+)x\d+")
IVF_RE = re.compile(r"IVF(\d+)")


@dataclass(frozen=True)
class IndexChoice:
    key: str              # faiss factory string that is built
    autofaiss_key: str    # what autofaiss proposed (size estimates use it: an upper bound)
    estimated_bytes: int  # whole index, all shards
    train_size: int       # vectors in the training sample
    train_bytes: int      # estimated training memory
    reason: str


def nlist_of(key: str) -> int:
    m = IVF_RE.search(key)
    return int(m.group(1)) if m else 1


def estimated_size(key: str, n: int, dim: int) -> int:
    """autofaiss's size estimate of `key` holding n vectors (codes, ids, quantizer)."""
    return int(IndexMetadata(key, n, dim).estimated_index_size_in_bytes())


def smallest_budget(n: int, dim: int) -> int:
    """The smallest max_index_memory_usage for which autofaiss finds an index for n x dim."""
    keys = get_optimal_quantization(n, dim)
    return min((estimated_size(k, n, dim) for k in keys), default=4 * n * dim)


def drop_opq(key: str, dim: int) -> str:
    """`key` without its OPQ prefix when that is valid and cheap in recall, else `key`."""
    m = OPQ_RE.match(key)
    if not m:
        return key
    pq = int(m.group(1))
    if dim % pq == 0 and dim // pq <= 4:
        return m.group(3)
    return key


def choose_index(n: int, dim: int, max_index_bytes: int, memory_bytes: int,
                 exact_below: int = 20000, index_key: str = "auto", opq: str = "auto",
                 points_per_centroid: int = 64, eval_queries: int = 0) -> IndexChoice:
    """Pick the index for n vectors of `dim` dims under the budgets (bytes).

    Raises ConfigError when no index fits, naming the smallest budget that would.
    """
    budget = cast_bytes_to_memory_string(max_index_bytes)
    if index_key != "auto":
        key = auto_key = index_key
        reason = "index_key from the config"
    elif n < exact_below:
        key = auto_key = "IVF1,Flat"
        reason = f"exact search: fewer than exact_below={exact_below} vectors"
    else:
        keys = get_optimal_index_keys_v2(n, dim, budget, should_be_memory_mappable=True)
        if not keys:
            need = cast_bytes_to_memory_string(smallest_budget(n, dim))
            raise ConfigError(
                f"index.max_index_memory_usage={budget} cannot hold {n} vectors of {dim} dims; "
                f"the smallest budget that would is {need}")
        auto_key = keys[0]
        key = auto_key if opq == "keep" else (
            OPQ_RE.sub(r"\3", auto_key) if opq == "drop" else drop_opq(auto_key, dim))
        reason = "autofaiss get_optimal_index_keys_v2 (memory-mappable)" + (
            ", OPQ dropped" if key != auto_key else "")
    size = estimated_size(auto_key, n, dim) if "OPQ" in auto_key or "Flat" in auto_key \
        else _pq_size(key, n, dim)
    if size > max_index_bytes:
        need = cast_bytes_to_memory_string(min(size, smallest_budget(n, dim)))
        raise ConfigError(
            f"index {key} for {n} vectors needs about {cast_bytes_to_memory_string(size)}, over "
            f"index.max_index_memory_usage={budget}; the smallest budget that would hold the "
            f"corpus is {need}")
    nlist = nlist_of(key)
    room = max(n - eval_queries, 1)
    train_size = min(room, max(nlist * points_per_centroid, 1000 if nlist > 1 else 1))
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


def _pq_size(key: str, n: int, dim: int) -> int:
    m = PQ_RE.search(key)
    code = int(m.group(1)) if m else 4 * dim
    return int(n * (code + 8) + nlist_of(key) * dim * 4 * 2)


def _training_bytes(key: str, train_size: int, dim: int) -> int:
    try:
        return int(compute_memory_necessary_for_training_wrapper(train_size, key, dim))
    except Exception:  # keys autofaiss cannot estimate: the sample and a copy
        return int(2 * train_size * dim * 4)


def shard_count_for_memory(estimated_bytes: int, memory_bytes: int) -> int:
    """Fewest shards such that merging one fits in `memory_bytes` (with 2x headroom)."""
    return max(1, math.ceil(2 * estimated_bytes / memory_bytes))
