"""Similarities between L2-normalised descriptors (DESIGN.md, "Science")."""

from __future__ import annotations

import numpy as np


def inner_product(queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """(Q, d) x (C, d) -> (Q, C) inner products (cosine for normalised descriptors)."""
    return np.asarray(queries, np.float32) @ np.asarray(candidates, np.float32).T


def split_product(query_chunks: np.ndarray, candidate_chunks: np.ndarray) -> np.ndarray:
    """Split-product (paper 1, sec. 4): max over chunks of the inner product of
    corresponding chunks. (T, d) x (C, T, d) -> (C,); for ViTs one chunk per patch token."""
    q = np.asarray(query_chunks, np.float32)
    c = np.asarray(candidate_chunks, np.float32)
    if c.shape[1:] != q.shape:
        raise ValueError(f"split-product needs equal chunk layouts: query {q.shape}, "
                         f"candidates {c.shape[1:]}")
    return np.einsum("td,ctd->ct", q, c).max(axis=1)


def split_descriptor(vectors: np.ndarray, chunks: int) -> np.ndarray:
    """Split (N, d) descriptors into (N, chunks, d / chunks) chunks, each L2-normalised."""
    n, d = vectors.shape
    if d % chunks:
        raise ValueError(f"cannot split {d} dims into {chunks} equal chunks")
    out = np.asarray(vectors, np.float32).reshape(n, chunks, d // chunks)
    return out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
