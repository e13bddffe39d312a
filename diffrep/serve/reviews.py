"""Reviewer verdicts: a person's call on a generation/training pair, a duplicate pair or a
caption, stored in SQLite (WAL mode) at <root>/reviews/verdicts.sqlite with the time and
the reviewer's name, and exported to <root>/reviews/verdicts.parquet after every verdict
(written under a temporary name, then renamed).

An item is named by a string the pages build (see item_id); every verdict is kept, the
latest one per item is the item's verdict. Memory: verdicts are made by people, so the
export of all of them is small; reads ask for the items on one page.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pyarrow as pa

from diffrep import storage

VERDICTS = {
    "exact_copy": "exact copy",
    "retrieved_copy": "retrieved copy",
    "template_copy": "template copy",
    "not_a_copy": "not a copy",
}
#: the verdicts that count as a copy where a ranking's precision uses them as labels
COPY_VERDICTS = frozenset({"exact_copy", "retrieved_copy", "template_copy"})
MAX_NOTE = 2000
MAX_NAME = 100

SCHEMA = """
CREATE TABLE IF NOT EXISTS verdicts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    item TEXT NOT NULL,
    verdict TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    reviewer TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS verdicts_item ON verdicts (item, seq);
"""


def item_id(kind: str, *parts: object) -> str:
    """The name of a reviewable item: ('scan', run, gen_id, training key), ('dedup',
    model, key_a, key_b), ('caption', ranking run, caption_id)."""
    return "/".join([kind, *(str(p) for p in parts)])


class Reviews:
    """The verdict store of one root. One SQLite connection per thread; WAL lets the
    pages read while a verdict is written."""

    def __init__(self, root: Path):
        self.folder = Path(root) / "reviews"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / "verdicts.sqlite"
        self.export_path = self.folder / "verdicts.parquet"
        self._local = threading.local()
        self._write = threading.Lock()
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = sqlite3.connect(self.path, timeout=30)
        return db

    def add(self, item: str, verdict: str, reviewer: str, note: str = "") -> dict:
        """Record a verdict; raises ValueError on an unknown verdict or a missing name."""
        reviewer, note = (reviewer or "").strip(), (note or "").strip()
        if verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {sorted(VERDICTS)}, not {verdict!r}")
        if not reviewer or len(reviewer) > MAX_NAME:
            raise ValueError(f"a verdict needs the reviewer's name (1-{MAX_NAME} characters)")
        if not item or len(item) > 1000:
            raise ValueError("a verdict needs the item it is about")
        if len(note) > MAX_NOTE:
            raise ValueError(f"the note is longer than {MAX_NOTE} characters")
        row = {"item": item, "verdict": verdict, "note": note, "reviewer": reviewer,
               "created_at": time.time()}
        with self._write:
            with self._db() as db:
                db.execute("INSERT INTO verdicts (item, verdict, note, reviewer, created_at) "
                           "VALUES (:item, :verdict, :note, :reviewer, :created_at)", row)
            self.export()
        return row

    def latest(self, items: list[str]) -> dict[str, dict]:
        """{item: its latest verdict} of those of `items` that have one."""
        out: dict[str, dict] = {}
        db = self._db()
        for start in range(0, len(items), 500):
            chunk = items[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for item, verdict, note, reviewer, created in db.execute(
                    f"SELECT item, verdict, note, reviewer, created_at FROM verdicts v WHERE item IN "
                    f"({marks}) AND seq = (SELECT max(seq) FROM verdicts w WHERE w.item = v.item)", chunk):
                out[item] = {"verdict": verdict, "note": note, "reviewer": reviewer, "created_at": created}
        return out

    def all_rows(self) -> list[dict]:
        cur = self._db().execute("SELECT seq, item, verdict, note, reviewer, created_at FROM verdicts ORDER BY seq")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def export(self) -> str:
        """Every verdict as parquet (seq, item, verdict, note, reviewer, created_at as UTC
        timestamp); returns the file's path."""
        rows = self.all_rows()
        table = pa.table({
            "seq": pa.array([r["seq"] for r in rows], pa.int64()),
            "item": pa.array([r["item"] for r in rows], pa.string()),
            "verdict": pa.array([r["verdict"] for r in rows], pa.string()),
            "note": pa.array([r["note"] for r in rows], pa.string()),
            "reviewer": pa.array([r["reviewer"] for r in rows], pa.string()),
            "created_at": pa.array([int(r["created_at"] * 1e6) for r in rows], pa.timestamp("us", tz="UTC")),
        })
        storage.write_parquet(str(self.export_path), table)
        return str(self.export_path)
