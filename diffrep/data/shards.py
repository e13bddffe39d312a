"""Listing input shards: brace patterns, globs, local paths and fsspec URLs."""

from __future__ import annotations

import re

import braceexpand

from diffrep import storage

_SHARD_ID = re.compile(r"^[A-Za-z0-9_.-]+$")


def expand_shards(spec: str | list[str]) -> list[str]:
    """Expand a shard spec into an ordered, de-duplicated list of shard URLs.

    `spec` is one string or a list of strings; each may hold brace ranges
    (`shards/{00000..00099}.tar`) or glob wildcards (`shards/*.tar`). Globs are
    resolved against the filesystem; brace-expanded names are returned as given, so
    a missing shard is reported by `check_shards_exist`, not silently dropped.
    """
    specs = [spec] if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for item in specs:
        for url in braceexpand.braceexpand(item):
            if any(ch in url for ch in "*?["):
                fs, path = storage.filesystem(url)
                protocol = url.split("://", 1)[0] + "://" if "://" in url else ""
                out.extend(sorted(protocol + p for p in fs.glob(path)))
            else:
                out.append(url)
    seen: set[str] = set()
    return [u for u in out if not (u in seen or seen.add(u))]


def shard_id(url: str) -> str:
    """The output name of a shard: its file name without `.tar` (e.g. `00042`)."""
    name = url.rstrip("/").rsplit("/", 1)[-1]
    stem = name[: -len(".tar")] if name.endswith(".tar") else name
    if not _SHARD_ID.match(stem) or stem in (".", ".."):
        raise ValueError(
            f"shard file name {name!r} cannot name an output file: use names made of "
            "letters, digits, '.', '_' and '-' (img2dataset writes 00000.tar, 00001.tar, ...)"
        )
    return stem


def check_shards(urls: list[str]) -> list[str]:
    """Return error messages for missing shards and for shards whose ids collide."""
    errors: list[str] = []
    ids: dict[str, str] = {}
    present = _existing(urls)
    for url in urls:
        if url not in present:
            errors.append(f"input shard {url} does not exist")
            continue
        try:
            sid = shard_id(url)
        except ValueError as exc:
            errors.append(str(exc))
            continue
        if sid in ids:
            errors.append(
                f"input shards {ids[sid]} and {url} share the output name {sid!r}: "
                "give each shard a unique file name"
            )
        ids[sid] = url
    return errors


def _existing(urls: list[str]) -> set[str]:
    """The URLs that exist, with one listing per parent folder (not one request per
    shard: LAION-2B has ~230k shards on object storage)."""
    by_parent: dict[str, list[str]] = {}
    for url in urls:
        by_parent.setdefault(url.rsplit("/", 1)[0] if "/" in url else ".", []).append(url)
    found: set[str] = set()
    for parent, members in by_parent.items():
        fs, path = storage.filesystem(parent)
        try:
            names = {p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)}
        except (FileNotFoundError, NotADirectoryError):
            continue
        found.update(u for u in members if u.rsplit("/", 1)[-1] in names)
    return found
