"""The SQLite layer of a local collection: one connection, the items, the removal log, settings.

``collection.sqlite`` is the source of truth. Every write is one ``BEGIN IMMEDIATE`` transaction
that bumps the collection's *generation*; rows written by it carry that generation and the vids it
deleted are logged in ``removed`` with it. Vector ids (``vid``) are never reused, so everything
derived from the items (the in-memory vector table, the ANN index, the attribute vectors) is
brought from generation G to now by :meth:`ItemDB.changes`. Other tables of the collection (the
attribute vectors) live in the same database and use the same connection and lock.
"""

from __future__ import annotations

import contextlib
import json
import math
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vestis.errors import CollectionDamagedError, NotFoundError, VestisError
from vestis.store.guards import DiskFullError, is_disk_full
from vestis.locks import collection_lock

DB_NAME = "collection.sqlite"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS settings(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items(
    vid INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    catalogue TEXT NOT NULL DEFAULT '',
    stamp TEXT NOT NULL DEFAULT '',
    hash TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}',
    encoder_version TEXT NOT NULL,
    gen INTEGER NOT NULL,
    added_at REAL NOT NULL,
    vector BLOB NOT NULL,
    colour BLOB
);
CREATE TABLE IF NOT EXISTS removed(vid INTEGER PRIMARY KEY, gen INTEGER NOT NULL);
""" + "".join(f"CREATE INDEX IF NOT EXISTS {table}_by_gen ON {table}(gen);\n" for table in ("items", "removed"))
# catching up with other writers reads the rows of a few generations: without these indexes every
# catch-up would scan the whole items table, vectors included


@dataclass(frozen=True)
class Item:
    """An item as stored: ``vid`` is its vector id inside this collection."""

    id: str
    vid: int
    source: str
    metadata: dict[str, Any]
    hash: str
    stamp: str
    catalogue: str


@dataclass
class NewItem:
    """An embedded item ready to be written."""

    id: str
    source: str
    hash: str
    vector: np.ndarray
    colour: np.ndarray | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    stamp: str = ""
    catalogue: str = ""
    encoder_version: str = ""  # the encoder that made ``vector``; when given, the store refuses another's


@dataclass
class Changes:
    """What generations after some G changed: vids removed, and (vid, vector, colour) rows added."""

    generation: int
    removed: list[int]
    added: list[tuple[int, bytes, bytes | None]]


def check_item_vectors(items: Sequence[NewItem], dim: int) -> None:
    """Every item's vector has the collection's dimension (any store checks before it writes)."""
    for it in items:
        if it.vector.shape != (dim,):
            raise VestisError(f"item {it.id}: vector has shape {it.vector.shape}, collection dim is {dim}")


def check_slot_vectors(kind: str, vids: Sequence[int], vectors: np.ndarray, slots: int, dim: int) -> np.ndarray:
    """Per-item vectors (attribute, joint) as float32, items x slots x dim, or a clear error."""
    vectors = np.asarray(vectors, np.float32)
    if vectors.shape[1:] != (slots, dim) or len(vectors) != len(vids):
        raise VestisError(f"{kind} vectors must be {len(vids)} x {slots} x {dim}, got {vectors.shape}")
    return vectors


def metadata_json(metadata: dict[str, Any]) -> str:
    """Metadata as JSON; missing values (None, NaN, inf, "") are dropped, so SQLite's JSON
    functions and filters never meet invalid JSON."""
    clean = {
        str(k): v
        for k, v in metadata.items()
        if v is not None and v != "" and not (isinstance(v, float) and not math.isfinite(v))
    }
    return json.dumps(clean, ensure_ascii=False, sort_keys=True, allow_nan=False)


class ItemDB:
    """The collection's SQLite database (see the module docstring). Thread-safe: one lock
    serialises every use of the one connection."""

    ITEM_COLS = "id, vid, source, metadata, hash, stamp, catalogue"

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self.conn = conn
        self.lock = collection_lock(f"collection {path}")

    # ----------------------------------------------------------------- opening
    @staticmethod
    def connect(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(path / DB_NAME, check_same_thread=False, isolation_level=None, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        return conn

    @classmethod
    def create(cls, path: Path, settings: dict[str, str]) -> ItemDB:
        """A new database holding ``settings`` (the directory must hold no collection)."""
        path.mkdir(parents=True, exist_ok=True)
        db = cls(path, cls.connect(path))
        db.conn.executescript(_SCHEMA)
        with db.write():
            db.conn.executemany(
                "INSERT OR REPLACE INTO settings VALUES (?, ?)",
                {"schema_version": str(SCHEMA_VERSION), "generation": "0", **settings}.items(),
            )
        return db

    @classmethod
    def open(cls, path: Path) -> ItemDB:
        db = cls(path, cls.connect(path))
        version = db.conn.execute("SELECT value FROM settings WHERE key='schema_version'").fetchone()
        if version is None or int(version[0]) > SCHEMA_VERSION:
            db.close()
            raise VestisError(f"{path}: unsupported collection schema {version}")
        indexes = {r[0] for r in db.conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        if not {"items_by_gen", "removed_by_gen"} <= indexes:
            try:  # a collection made before the generation indexes gets them once (a read-only one goes without)
                db.conn.executescript(_SCHEMA)
            except sqlite3.OperationalError:
                pass
        return db

    @staticmethod
    def exists(path: Path) -> bool:
        """True when ``path`` holds a complete collection (its settings were committed); a database
        file that is not readable SQLite (truncated, overwritten) raises CollectionDamagedError."""
        db = Path(path) / DB_NAME
        if not db.exists():
            return False
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return conn.execute("SELECT 1 FROM settings WHERE key='schema_version'").fetchone() is not None
        except sqlite3.OperationalError as e:  # no settings table yet: a create that never committed
            if is_disk_full(e, path):  # or a full disk: SQLite could not make its shared-memory file
                raise DiskFullError(f"the disk holding {path} is full, so its collection cannot be read ({e}). "
                                    "Free some space and run the command again") from None
            return False
        except sqlite3.DatabaseError as e:  # "database disk image is malformed", "file is not a database"
            raise CollectionDamagedError(
                f"the collection at {path} is damaged: {DB_NAME} cannot be read ({e}). Restore it from a "
                "backup, or index the catalogue again into a new collection") from None
        finally:
            conn.close()

    def close(self) -> None:
        with self.lock:
            self.conn.close()

    # ----------------------------------------------------------------- transactions
    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        """One write transaction (``BEGIN IMMEDIATE``: no other writer until it ends)."""
        with self.lock, self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            yield

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """One read transaction: every read inside sees the same committed state (inside a
        transaction already open, that one)."""
        with self.lock:
            if self.conn.in_transaction:
                yield
                return
            self.conn.execute("BEGIN")
            try:
                yield
            finally:
                self.conn.execute("COMMIT")

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self.lock:
            return self.conn.execute(sql, params).fetchall()

    # ----------------------------------------------------------------- settings and generation
    def settings(self) -> dict[str, str]:
        return dict(self.read("SELECT key, value FROM settings"))

    def set_settings(self, values: dict[str, str]) -> None:
        """Write settings (inside the caller's write transaction, or in one of their own)."""
        with self.lock:
            if self.conn.in_transaction:
                self.conn.executemany("INSERT OR REPLACE INTO settings VALUES (?, ?)", values.items())
                return
            with self.write():
                self.conn.executemany("INSERT OR REPLACE INTO settings VALUES (?, ?)", values.items())

    def generation(self) -> int:
        return int(self.read("SELECT value FROM settings WHERE key='generation'")[0][0])

    def vectors_since(self) -> int:
        """The generation whose write replaced every item's vector (``vestis reindex``): derived files
        (vector cache, ANN index) of an earlier generation hold the old encoder's vectors."""
        rows = self.read("SELECT value FROM settings WHERE key='vectors_since'")
        return int(rows[0][0]) if rows else 0

    def drop_settings(self, keys: Sequence[str]) -> None:
        """Delete settings (inside the caller's write transaction)."""
        self.conn.executemany("DELETE FROM settings WHERE key=?", [(k,) for k in keys])

    def bump(self) -> int:
        """The next generation (inside a write transaction)."""
        gen = self.generation() + 1
        self.conn.execute("UPDATE settings SET value=? WHERE key='generation'", (str(gen),))
        return gen

    def changes(self, since: int, until: int | None = None) -> Changes:
        """Removals and additions of generations ``since`` < g <= ``until`` (default: now). Call it
        inside a snapshot or write transaction so the generation matches the rows."""
        now = self.generation() if until is None else until
        if since >= now:
            return Changes(now, [], [])
        removed = [r[0] for r in self.read("SELECT vid FROM removed WHERE gen > ? AND gen <= ?", (since, now))]
        added = self.read(
            "SELECT vid, vector, colour FROM items WHERE gen > ? AND gen <= ? ORDER BY vid", (since, now)
        )
        return Changes(now, removed, added)

    # ----------------------------------------------------------------- reading items
    def count(self) -> int:
        return self.read("SELECT COUNT(*) FROM items")[0][0]

    def contains(self, item_id: str) -> bool:
        return bool(self.read("SELECT 1 FROM items WHERE id=?", (item_id,)))

    @staticmethod
    def _item(row: Sequence[Any]) -> Item:
        return Item(row[0], row[1], row[2], json.loads(row[3]), row[4], row[5], row[6])

    def get(self, item_id: str) -> Item:
        rows = self.read(f"SELECT {self.ITEM_COLS} FROM items WHERE id=?", (item_id,))
        if not rows:
            raise NotFoundError(f"no item {item_id!r} in collection {self.path}")
        return self._item(rows[0])

    def items_by_vid(self, vids: Sequence[int]) -> list[Item]:
        """Items for the given vids, in the same order (missing vids are skipped)."""
        vids = [int(v) for v in vids]
        found: dict[int, Item] = {}
        for start in range(0, len(vids), 900):
            chunk = vids[start : start + 900]
            q = f"SELECT {self.ITEM_COLS} FROM items WHERE vid IN ({','.join('?' * len(chunk))})"
            for row in self.read(q, chunk):
                found[row[1]] = self._item(row)
        return [found[v] for v in vids if v in found]

    def iter_items(self) -> Iterator[Item]:
        """All items in vid order."""
        yield from (self._item(r) for r in self.read(f"SELECT {self.ITEM_COLS} FROM items ORDER BY vid"))

    def items_where(self, condition: str) -> list[Item]:
        """The items matching an SQL condition on the items table, in vid order."""
        return [self._item(r) for r in self.read(f"SELECT {self.ITEM_COLS} FROM items WHERE {condition} ORDER BY vid")]

    def page(self, offset: int, limit: int) -> list[Item]:
        """At most ``limit`` items after the first ``offset``, in vid order (the order they were added)."""
        rows = self.read(f"SELECT {self.ITEM_COLS} FROM items ORDER BY vid LIMIT ? OFFSET ?", (limit, offset))
        return [self._item(r) for r in rows]

    def stamps(self) -> dict[str, tuple[str, str, str, str]]:
        """id -> (stamp, hash, source, catalogue) for incremental indexing."""
        rows = self.read("SELECT id, stamp, hash, source, catalogue FROM items")
        return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}

    def vector_of(self, item_id: str) -> tuple[np.ndarray, np.ndarray | None]:
        rows = self.read("SELECT vector, colour FROM items WHERE id=?", (item_id,))
        if not rows:
            raise NotFoundError(f"no item {item_id!r} in collection {self.path}")
        vector, colour = rows[0]
        return np.frombuffer(vector, np.float32), np.frombuffer(colour, np.float32) if colour else None

    def stored_vectors(self, item_id: str, content_hash: str,
                       encoder_version: str) -> tuple[np.ndarray, np.ndarray | None] | None:
        """The vectors of ``item_id`` if it still holds the content with ``content_hash``, embedded
        by ``encoder_version``; else None (one query, so a concurrent write cannot pair one content's
        hash with another's vectors)."""
        rows = self.read("SELECT vector, colour FROM items WHERE id=? AND hash=? AND encoder_version=?",
                         (item_id, content_hash, encoder_version))
        if not rows:
            return None
        vector, colour = rows[0]
        return np.frombuffer(vector, np.float32), np.frombuffer(colour, np.float32) if colour else None

    def metadata_rows(self) -> list[tuple[int, str]]:
        return self.read("SELECT vid, metadata FROM items")

    def all_vids(self) -> np.ndarray:
        return np.array([r[0] for r in self.read("SELECT vid FROM items")], np.int64)

    def rows(self) -> list[tuple[int, bytes, bytes | None]]:
        """Every (vid, vector, colour) row in vid order."""
        return self.read("SELECT vid, vector, colour FROM items ORDER BY vid")

    def catalogue_counts(self) -> list[tuple[str, int]]:
        return self.read("SELECT catalogue, COUNT(*) FROM items GROUP BY catalogue")

    # ----------------------------------------------------------------- writing (inside write())
    def insert(self, items: Sequence[NewItem], gen: int, encoder_version: str) -> list[int]:
        """Insert items at generation ``gen``; returns their vids."""
        now = time.time()
        vids = []
        for it in items:
            cur = self.conn.execute(
                "INSERT INTO items(id, source, catalogue, stamp, hash, metadata, encoder_version, gen,"
                " added_at, vector, colour) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    it.id, it.source, it.catalogue, it.stamp, it.hash, metadata_json(it.metadata),
                    encoder_version, gen, now, np.ascontiguousarray(it.vector, np.float32).tobytes(),
                    None if it.colour is None else np.ascontiguousarray(it.colour, np.float32).tobytes(),
                ),
            )
            vids.append(cur.lastrowid)
        return vids

    def delete(self, ids: Sequence[str], gen: int) -> list[int]:
        """Delete items by id at generation ``gen`` (logged in ``removed``); returns their vids."""
        ids = list(ids)
        vids: list[int] = []
        for start in range(0, len(ids), 900):
            chunk = ids[start : start + 900]
            marks = ",".join("?" * len(chunk))
            vids += [r[0] for r in self.conn.execute(f"SELECT vid FROM items WHERE id IN ({marks})", chunk)]
            self.conn.execute(f"DELETE FROM items WHERE id IN ({marks})", chunk)
        self.conn.executemany("INSERT OR REPLACE INTO removed VALUES (?, ?)", [(v, gen) for v in vids])
        return vids

    def set_stamps(self, stamps: Sequence[tuple[str, str]]) -> None:
        self.conn.executemany("UPDATE items SET stamp=? WHERE id=?", [(s, i) for i, s in stamps])

    def set_metadata(self, updates: Sequence[tuple[str, dict[str, Any]]]) -> None:
        self.conn.executemany("UPDATE items SET metadata=? WHERE id=?", [(metadata_json(m), i) for i, m in updates])
