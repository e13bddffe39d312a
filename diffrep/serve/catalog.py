"""What an output root holds, for the served pages: indexes, scan runs and their
checkpoints, dedup reports and caption rankings; and the one rule for every file the app
reads on a request's behalf: it must resolve inside the root.

Memory: names only (a directory listing per call); no table is read here.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from diffrep import storage

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,199}")  # a run, checkpoint or model folder


class NotFound(LookupError):
    """A request named a run, checkpoint, model, group or file the root does not hold."""


class Forbidden(PermissionError):
    """A request named a path outside the root."""


def _dirs(path: Path) -> list[str]:
    try:
        return sorted(p.name for p in path.iterdir() if p.is_dir() and NAME.fullmatch(p.name))
    except OSError:
        return []


@dataclass(frozen=True)
class Catalog:
    """The output root `root` (a local directory: DuckDB and the ranged thumbnail reads
    read it directly)."""

    root: Path

    @classmethod
    def of(cls, root: str) -> Catalog:
        fs, _ = storage.filesystem(root)
        if not storage.is_local(fs):
            raise ValueError(f"serve.root {root!r}: the app serves a local directory (mount the "
                             "bucket, or copy the outputs)")
        path = Path(root).resolve()
        if not path.is_dir():
            raise FileNotFoundError(f"serve.root {root!r} is not a directory")
        return cls(path)

    def indexes(self) -> dict[str, str]:
        """{index folder name: model name} of every committed index."""
        out = {}
        for name in _dirs(self.root / "indexes"):
            manifest = self.root / "indexes" / name / "manifest.json"
            if manifest.is_file():
                out[name] = storage.read_json(str(manifest)).get("model", name)
        return out

    def scans(self) -> dict[str, list[str]]:
        """{scan run: [checkpoint labels with generations]}."""
        return {run: labels for run in _dirs(self.root / "scans") if not run.startswith("_")
                if (labels := _dirs(self.root / "scans" / run / "generations"))}

    def dedups(self) -> list[str]:
        return [m for m in _dirs(self.root / "dedup") if (self.root / "dedup" / m / "group_stats").is_dir()]

    def rankings(self) -> list[str]:
        return [r for r in _dirs(self.root / "rankings") if (self.root / "rankings" / r / "ranked.parquet").is_file()]

    def scan_dir(self, run: str, label: str | None = None) -> Path:
        labels = self.scans().get(run)
        if labels is None or (label is not None and label not in labels):
            raise NotFound(f"no scan run {run!r}" + (f" with checkpoint {label!r}" if label else ""))
        return self.root / "scans" / run

    def dedup_dir(self, model: str) -> Path:
        if model not in self.dedups():
            raise NotFound(f"no dedup report of {model!r}")
        return self.root / "dedup" / model

    def ranking_dir(self, run: str) -> Path:
        if run not in self.rankings():
            raise NotFound(f"no ranking run {run!r}")
        return self.root / "rankings" / run

    def inside(self, path: str | os.PathLike) -> Path:
        """`path` (absolute, or relative to the root) resolved, symlinks followed; raises
        Forbidden unless it is inside the root. A job writes absolute paths (image_tar);
        a root moved since is re-anchored at its scans/ or rankings/ part."""
        p = Path(path)
        resolved = (p if p.is_absolute() else self.root / p).resolve()
        if resolved.is_relative_to(self.root):
            return resolved
        if p.is_absolute():
            parts = p.parts
            for anchor in ("scans", "rankings", "dedup", "search"):
                if anchor in parts:
                    last = len(parts) - 1 - parts[::-1].index(anchor)
                    moved = self.root.joinpath(*parts[last:]).resolve()
                    if moved.is_relative_to(self.root) and moved.exists():
                        return moved
        raise Forbidden(f"{path} is outside the served root")

    def relative(self, path: str) -> str:
        """`path` as the root-relative form the pages put in their links."""
        return str(self.inside(path).relative_to(self.root))
