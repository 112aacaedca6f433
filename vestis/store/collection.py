"""The on-disk collection: SQLite is the source of truth, vectors and index are derived caches.

Layout of a collection directory::

    collection.sqlite     items (id, source, stamp, hash, metadata JSON, encoder version,
                          vector and colour BLOBs), removed vector ids, settings; WAL mode
    cache/vectors-G.npz   the vectors of generation G, for a fast open (rebuilt from SQLite if stale)
    index-G/              the ANN index as of generation G; ``index.json`` points at the current one

Every write is one SQLite transaction that bumps the collection's *generation*. Vector ids
(``vid``) are never reused, so a derived index saved at generation G is brought up to date by
adding the rows with ``gen > G`` and removing the vids deleted after G. Killing a process at any
moment leaves a collection that opens with every item committed before the kill.
"""

from __future__ import annotations

import json
import math
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vestis.errors import CollectionDamagedError, EncoderMismatchError, NotFoundError, VestisError
from vestis.index import load_index, make_index
from vestis.index.auto import EXACT_SPEC, choose_index, concrete_spec, describe_choice, is_auto
from vestis.index.base import VectorIndex
from vestis.store.atomic import atomic_write, atomic_write_bytes, fsync_tree

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
"""


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


def _metadata_json(metadata: dict[str, Any]) -> str:
    """Metadata as JSON; missing values (None, NaN, inf, "") are dropped, so SQLite's JSON
    functions and filters never meet invalid JSON."""
    clean = {
        str(k): v
        for k, v in metadata.items()
        if v is not None and v != "" and not (isinstance(v, float) and not math.isfinite(v))
    }
    return json.dumps(clean, ensure_ascii=False, sort_keys=True, allow_nan=False)


class VectorTable:
    """In-memory vectors and colour descriptors keyed by vid, with amortised growth and O(1) removal."""

    def __init__(self, dim: int, colour_dim: int) -> None:
        self.dim, self.colour_dim = dim, colour_dim
        self.vids = np.zeros(0, np.int64)
        self.vectors = np.zeros((0, dim), np.float32)
        self.colours = np.zeros((0, colour_dim), np.float32)
        self.n = 0
        self.row_of: dict[int, int] = {}

    def _reserve(self, extra: int) -> None:
        need = self.n + extra
        if need <= len(self.vids):
            return
        cap = max(need, int(len(self.vids) * 1.5) + 64)
        for name in ("vids", "vectors", "colours"):
            old = getattr(self, name)
            new = np.zeros((cap, *old.shape[1:]), old.dtype)
            new[: self.n] = old[: self.n]
            setattr(self, name, new)

    def add(self, vids: np.ndarray, vectors: np.ndarray, colours: np.ndarray | None) -> None:
        self._reserve(len(vids))
        s = slice(self.n, self.n + len(vids))
        self.vids[s] = vids
        self.vectors[s] = vectors
        self.colours[s] = 0 if colours is None else colours
        for i, v in enumerate(vids.tolist()):
            self.row_of[v] = self.n + i
        self.n += len(vids)

    def remove(self, vids: Iterable[int]) -> None:
        for v in vids:
            row = self.row_of.pop(int(v), None)
            if row is None:
                continue
            last = self.n - 1
            if row != last:
                moved = int(self.vids[last])
                self.vids[row] = moved
                self.vectors[row] = self.vectors[last]
                self.colours[row] = self.colours[last]
                self.row_of[moved] = row
            self.n = last

    def rows(self, vids: np.ndarray) -> np.ndarray:
        return np.fromiter((self.row_of[int(v)] for v in vids), np.int64, len(vids))

    @property
    def view(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.vids[: self.n], self.vectors[: self.n], self.colours[: self.n]


class Collection:
    """A persistent, incrementally updatable collection of embedded catalogue items.

    Thread-safe: one lock serialises writes and in-memory updates; searches read the in-memory
    table and index under the same lock (they take milliseconds).
    """

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn
        self._lock = threading.RLock()
        self.settings = dict(conn.execute("SELECT key, value FROM settings").fetchall())
        self.dim = int(self.settings["dim"])
        self.colour_dim = int(self.settings.get("colour_dim", "0"))
        self._table: VectorTable | None = None
        self._index: VectorIndex | None = None
        self._postings_cache: dict[str, dict[str, np.ndarray]] | None = None

    # ----------------------------------------------------------------- opening
    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(path / DB_NAME, check_same_thread=False, isolation_level=None, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        return conn

    @classmethod
    def create(
        cls,
        path: Path | str,
        *,
        encoder_name: str,
        encoder_version: str,
        dim: int,
        colour_dim: int,
        colour_version: str = "",
        index_spec: str = "exact",
        encoder_source: str | None = None,
    ) -> Collection:
        """Create a new, empty collection (the directory may exist but must not hold one).
        ``encoder_source`` is what opens the encoder again (the path of an ONNX model file);
        default: ``encoder_name``, a built-in."""
        path = Path(path)
        if cls.exists(path):
            raise VestisError(f"{path} already holds a collection")
        make_index(concrete_spec(index_spec, 0, dim), dim)  # validate the spec before writing anything
        path.mkdir(parents=True, exist_ok=True)
        conn = cls._connect(path)
        conn.executescript(_SCHEMA)
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            settings = {
                "schema_version": str(SCHEMA_VERSION),
                "encoder_name": encoder_name,
                "encoder_version": encoder_version,
                "encoder_source": encoder_source or encoder_name,
                "dim": str(dim),
                "colour_dim": str(colour_dim),
                "colour_version": colour_version,
                "index_spec": index_spec,
                "generation": "0",
                "created_at": str(time.time()),
            }
            conn.executemany("INSERT OR REPLACE INTO settings VALUES (?, ?)", settings.items())
        return cls(path, conn)

    @classmethod
    def open(cls, path: Path | str) -> Collection:
        path = Path(path)
        if not cls.exists(path):
            raise VestisError(f"no collection at {path} (create one with `vestis index SOURCE --collection {path}`)")
        conn = cls._connect(path)
        version = conn.execute("SELECT value FROM settings WHERE key='schema_version'").fetchone()
        if version is None or int(version[0]) > SCHEMA_VERSION:
            raise VestisError(f"{path}: unsupported collection schema {version}")
        return cls(path, conn)

    @classmethod
    def exists(cls, path: Path | str) -> bool:
        """True when ``path`` holds a complete collection (its settings were committed); a database
        file that is not readable SQLite (truncated, overwritten) raises CollectionDamagedError."""
        db = Path(path) / DB_NAME
        if not db.exists():
            return False
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return conn.execute("SELECT 1 FROM settings WHERE key='schema_version'").fetchone() is not None
        except sqlite3.OperationalError:  # no settings table yet: a create that never committed
            return False
        except sqlite3.DatabaseError as e:  # "database disk image is malformed", "file is not a database"
            raise CollectionDamagedError(
                f"the collection at {path} is damaged: {DB_NAME} cannot be read ({e}). Restore it from a "
                "backup, or index the catalogue again into a new collection") from None
        finally:
            conn.close()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- settings
    @property
    def encoder_name(self) -> str:
        return self.settings["encoder_name"]

    @property
    def encoder_source(self) -> str:
        """What :func:`vestis.encoders.get_encoder` opens this collection's encoder from: a
        built-in name or the path of the ONNX model the collection was indexed with."""
        return self.settings.get("encoder_source") or self.encoder_name

    @property
    def encoder_version(self) -> str:
        return self.settings["encoder_version"]

    @property
    def index_spec(self) -> str:
        return self.settings["index_spec"]

    @property
    def generation(self) -> int:
        return int(self._read("SELECT value FROM settings WHERE key='generation'")[0][0])

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Run a read query under the collection lock (the connection is shared by threads)."""
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def check_encoder(self, version: str) -> None:
        """Refuse vectors from an encoder other than the one that built this collection."""
        if version != self.encoder_version:
            raise EncoderMismatchError(
                f"collection {self.path} was built with encoder {self.encoder_name!r} "
                f"(version {self.encoder_version}); vectors from version {version} are not comparable. "
                f"Use --encoder {self.encoder_source}, or build a new collection for this encoder."
            )

    def set_setting(self, key: str, value: str) -> None:
        with self._lock, self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (key, value))
        self.settings[key] = value

    # ----------------------------------------------------------------- reading items
    def __len__(self) -> int:
        return self._read("SELECT COUNT(*) FROM items")[0][0]

    def __contains__(self, item_id: str) -> bool:
        return bool(self._read("SELECT 1 FROM items WHERE id=?", (item_id,)))

    _ITEM_COLS = "id, vid, source, metadata, hash, stamp, catalogue"

    @staticmethod
    def _item(row: Sequence[Any]) -> Item:
        return Item(row[0], row[1], row[2], json.loads(row[3]), row[4], row[5], row[6])

    def get(self, item_id: str) -> Item:
        rows = self._read(f"SELECT {self._ITEM_COLS} FROM items WHERE id=?", (item_id,))
        if not rows:
            raise NotFoundError(f"no item {item_id!r} in collection {self.path}")
        return self._item(rows[0])

    def items_by_vid(self, vids: Sequence[int]) -> list[Item]:
        """Items for the given vids, in the same order (missing vids are skipped)."""
        vids = [int(v) for v in vids]
        if not vids:
            return []
        found: dict[int, Item] = {}
        for start in range(0, len(vids), 900):
            chunk = vids[start : start + 900]
            q = f"SELECT {self._ITEM_COLS} FROM items WHERE vid IN ({','.join('?' * len(chunk))})"
            for row in self._read(q, chunk):
                found[row[1]] = self._item(row)
        return [found[v] for v in vids if v in found]

    def iter_items(self) -> Iterator[Item]:
        """All items in vid order."""
        yield from (self._item(r) for r in self._read(f"SELECT {self._ITEM_COLS} FROM items ORDER BY vid"))

    def page(self, offset: int, limit: int) -> list[Item]:
        """At most ``limit`` items after the first ``offset``, in vid order (the order they were added)."""
        rows = self._read(f"SELECT {self._ITEM_COLS} FROM items ORDER BY vid LIMIT ? OFFSET ?", (limit, offset))
        return [self._item(r) for r in rows]

    def stamps(self) -> dict[str, tuple[str, str, str, str]]:
        """id -> (stamp, hash, source, catalogue) for incremental indexing."""
        rows = self._read("SELECT id, stamp, hash, source, catalogue FROM items")
        return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}

    def vector_of(self, item_id: str) -> tuple[np.ndarray, np.ndarray | None]:
        rows = self._read("SELECT vector, colour FROM items WHERE id=?", (item_id,))
        if not rows:
            raise NotFoundError(f"no item {item_id!r} in collection {self.path}")
        row = rows[0]
        colour = np.frombuffer(row[1], np.float32) if row[1] else None
        return np.frombuffer(row[0], np.float32), colour

    def stored_vectors(self, item_id: str, content_hash: str) -> tuple[np.ndarray, np.ndarray | None] | None:
        """The vectors of ``item_id`` if it still holds the content with ``content_hash``, else None
        (one query, so a concurrent write cannot pair one content's hash with another's vectors)."""
        rows = self._read("SELECT vector, colour FROM items WHERE id=? AND hash=? AND encoder_version=?",
                          (item_id, content_hash, self.encoder_version))
        if not rows:
            return None
        vector, colour = rows[0]
        return np.frombuffer(vector, np.float32), np.frombuffer(colour, np.float32) if colour else None

    def _postings(self) -> dict[str, dict[str, np.ndarray]]:
        """metadata key -> value -> vids, built on first use and dropped on every write."""
        with self._lock:
            if self._postings_cache is None:
                post: dict[str, dict[str, list[int]]] = {}
                for vid, meta in self._read("SELECT vid, metadata FROM items"):
                    for key, value in json.loads(meta).items():
                        post.setdefault(key, {}).setdefault(str(value), []).append(vid)
                self._postings_cache = {
                    key: {value: np.array(vids, np.int64) for value, vids in values.items()}
                    for key, values in post.items()
                }
            return self._postings_cache

    def metadata_columns(self, max_values: int = 50) -> dict[str, list[tuple[str, int]]]:
        """Each metadata key with its most frequent values and counts (for filters and the web page)."""
        out = {}
        for key, values in sorted(self._postings().items()):
            counts = sorted(((v, len(vids)) for v, vids in values.items()), key=lambda vc: (-vc[1], vc[0]))
            out[key] = counts[:max_values]
        return out

    def filter_vids(self, filters: dict[str, Sequence[str]]) -> np.ndarray:
        """vids whose metadata matches every filter (a key equals one of the listed values)."""
        postings = self._postings()
        result: np.ndarray | None = None
        for key, values in filters.items():
            values = [values] if isinstance(values, str) else list(values)
            if not values:
                continue
            column = postings.get(key, {})
            hits = [column[str(v)] for v in values if str(v) in column]
            matched = np.unique(np.concatenate(hits)) if hits else np.zeros(0, np.int64)
            result = matched if result is None else np.intersect1d(result, matched, assume_unique=True)
        if result is None:
            return np.array([r[0] for r in self._read("SELECT vid FROM items")], np.int64)
        return result

    # ----------------------------------------------------------------- writing
    def _bump(self) -> int:
        gen = self.generation + 1
        self._conn.execute("UPDATE settings SET value=? WHERE key='generation'", (str(gen),))
        return gen

    def upsert(self, items: Sequence[NewItem]) -> list[int]:
        """Insert items (replacing any with the same id) in one transaction; returns their vids."""
        if not items:
            return []
        for it in items:
            if it.vector.shape != (self.dim,):
                raise VestisError(f"item {it.id}: vector has shape {it.vector.shape}, collection dim is {self.dim}")
        with self._lock:
            with self._conn:
                self._conn.execute("BEGIN IMMEDIATE")
                gen = self._bump()
                replaced = self._delete_ids([it.id for it in items], gen)
                now = time.time()
                vids = []
                for it in items:
                    cur = self._conn.execute(
                        "INSERT INTO items(id, source, catalogue, stamp, hash, metadata, encoder_version, gen,"
                        " added_at, vector, colour) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                        (
                            it.id, it.source, it.catalogue, it.stamp, it.hash,
                            _metadata_json(it.metadata),
                            self.encoder_version, gen, now,
                            np.ascontiguousarray(it.vector, np.float32).tobytes(),
                            None if it.colour is None else np.ascontiguousarray(it.colour, np.float32).tobytes(),
                        ),
                    )
                    vids.append(cur.lastrowid)
            self._apply_removed(replaced)
            self._apply_added(np.array(vids, np.int64), items)
        return vids

    def update_stamps(self, stamps: Sequence[tuple[str, str]]) -> None:
        """Record new change stamps for items whose content did not change (no re-embedding)."""
        with self._lock, self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.executemany("UPDATE items SET stamp=? WHERE id=?", [(s, i) for i, s in stamps])

    def update_metadata(self, updates: Sequence[tuple[str, dict[str, Any]]]) -> None:
        with self._lock, self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.executemany(
                "UPDATE items SET metadata=? WHERE id=?",
                [(_metadata_json(m), i) for i, m in updates],
            )
            self._postings_cache = None

    def remove(self, item_ids: Sequence[str]) -> int:
        """Remove items by id; unknown ids are ignored. Returns how many were removed."""
        with self._lock:
            with self._conn:
                self._conn.execute("BEGIN IMMEDIATE")
                gen = self._bump()
                removed = self._delete_ids(list(item_ids), gen)
            self._apply_removed(removed)
        return len(removed)

    def _delete_ids(self, ids: list[str], gen: int) -> list[int]:
        self._postings_cache = None
        vids: list[int] = []
        for start in range(0, len(ids), 900):
            chunk = ids[start : start + 900]
            marks = ",".join("?" * len(chunk))
            vids += [r[0] for r in self._conn.execute(f"SELECT vid FROM items WHERE id IN ({marks})", chunk)]
            self._conn.execute(f"DELETE FROM items WHERE id IN ({marks})", chunk)
        self._conn.executemany("INSERT OR REPLACE INTO removed VALUES (?, ?)", [(v, gen) for v in vids])
        return vids

    def _apply_added(self, vids: np.ndarray, items: Sequence[NewItem]) -> None:
        if self._table is None:
            return  # not loaded yet: loading reads the committed rows
        vectors = np.stack([it.vector for it in items]).astype(np.float32)
        colours = None
        if self.colour_dim:
            colours = np.stack(
                [np.zeros(self.colour_dim, np.float32) if it.colour is None else it.colour for it in items]
            ).astype(np.float32)
        self._table.add(vids, vectors, colours)
        if self._index is not None:
            self._index.add(vids, vectors)

    def _apply_removed(self, vids: list[int]) -> None:
        if not vids or self._table is None:
            return
        self._table.remove(vids)
        if self._index is not None:
            self._index.remove(np.array(vids, np.int64))

    # ----------------------------------------------------------------- vectors and index
    @property
    def lock(self) -> threading.RLock:
        return self._lock

    def table(self) -> VectorTable:
        """All vectors and colours in memory (loaded from the cache, or from SQLite when stale)."""
        with self._lock:
            if self._table is None:
                self._table = self._load_table()
            return self._table

    def _cache_file(self, gen: int) -> Path:
        return self.path / "cache" / f"vectors-{gen}.npz"

    def _load_table(self) -> VectorTable:
        gen = self.generation
        table = VectorTable(self.dim, self.colour_dim)
        cached = self._cache_file(gen)
        if cached.exists():
            try:
                with np.load(cached) as z:
                    table.add(z["vids"], z["vectors"], z["colours"] if self.colour_dim else None)
                return table
            except (OSError, ValueError, KeyError):
                table = VectorTable(self.dim, self.colour_dim)  # torn or foreign cache: rebuild
        vids, vectors, colours = [], [], []
        for vid, vec, col in self._read("SELECT vid, vector, colour FROM items ORDER BY vid"):
            vids.append(vid)
            vectors.append(vec)
            colours.append(col if col else bytes(4 * self.colour_dim))
        if vids:
            table.add(
                np.array(vids, np.int64),
                np.frombuffer(b"".join(vectors), np.float32).reshape(-1, self.dim),
                np.frombuffer(b"".join(colours), np.float32).reshape(-1, self.colour_dim) if self.colour_dim else None,
            )
        return table

    def save_cache(self) -> None:
        """Write the vector cache for the current generation (atomic) and drop older ones."""
        with self._lock:
            table = self.table()
            gen = self.generation
            cache_dir = self.path / "cache"
            cache_dir.mkdir(exist_ok=True)
            vids, vectors, colours = table.view

            def write(p: Path) -> None:
                with open(p, "wb") as f:
                    np.savez(f, vids=vids, vectors=vectors, colours=colours)

            atomic_write(self._cache_file(gen), write)
            for old in cache_dir.glob("vectors-*.npz"):
                if old.name != self._cache_file(gen).name:
                    old.unlink(missing_ok=True)

    @property
    def uses_ann(self) -> bool:
        """False for the ``exact`` spec: exact search scores the in-memory table directly, so no
        second copy of the vectors is kept in an index."""
        return self.active_index_spec != EXACT_SPEC

    def index(self) -> VectorIndex:
        """The ANN index, brought up to date with the committed items (only when ``uses_ann``)."""
        if not self.uses_ann:
            raise VestisError("the exact spec keeps no separate index: score collection.table() instead")
        with self._lock:
            if self._index is None:
                self._index = self._load_index()
            return self._index

    def _load_index(self) -> VectorIndex:
        pointer = self.path / "index.json"
        spec = self.active_index_spec
        if pointer.exists():
            try:
                state = json.loads(pointer.read_text())
                if state.get("spec") == make_index(spec, self.dim).spec:  # both in canonical form
                    index = load_index(self.path / state["dir"])
                    self._catch_up(index, int(state["generation"]))
                    return index
            except (OSError, ValueError, KeyError, VestisError):
                pass  # unreadable or stale: rebuilt below from the source of truth
        index = make_index(spec, self.dim)
        vids, vectors, _ = self.table().view
        if len(vids):
            index.add(vids.copy(), vectors.copy())
        return index

    def _catch_up(self, index: VectorIndex, since: int) -> None:
        removed = [r[0] for r in self._read("SELECT vid FROM removed WHERE gen > ?", (since,))]
        if removed:
            index.remove(np.array(removed, np.int64))
        rows = self._read("SELECT vid, vector FROM items WHERE gen > ? ORDER BY vid", (since,))
        if rows:
            vids = np.array([r[0] for r in rows], np.int64)
            index.add(vids, np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(-1, self.dim))

    def set_index_spec(self, spec: str) -> None:
        """Switch to another index backend (rebuilt now from the stored vectors)."""
        make_index(concrete_spec(spec, len(self), self.dim), self.dim)
        with self._lock:
            self.set_setting("index_spec", spec)
            self._drop_index()
            self._resolve_auto()
            self.save_index()

    def _drop_index(self) -> None:
        self._index = None
        (self.path / "index.json").unlink(missing_ok=True)
        for old in self.path.glob("index-*"):
            shutil.rmtree(old, ignore_errors=True)

    # ----------------------------------------------------------------- automatic index choice (issue 7)
    @property
    def active_index_spec(self) -> str:
        """The concrete spec in use: ``index_spec``, or what ``auto`` resolved to (see vestis.index.auto)."""
        if not is_auto(self.index_spec):
            return self.index_spec
        return self.settings.get("index_auto_resolved", EXACT_SPEC)

    def _resolve_auto(self) -> None:
        """For ``auto``: move to the spec chosen for the current item count (the index is rebuilt
        on the next save when that changes the choice)."""
        with self._lock:
            if not is_auto(self.index_spec):
                return
            chosen = choose_index(len(self), self.dim, current=self.active_index_spec)
            if chosen != self.active_index_spec:
                self.set_setting("index_auto_resolved", chosen)
                self._drop_index()

    def save_index(self) -> None:
        """Persist the index for the current generation: written aside, then the pointer swapped."""
        if not self.uses_ann:
            return
        with self._lock:
            index = self.index()
            gen = self.generation
            name = f"index-{gen}"
            tmp = self.path / f".{name}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            index.save(tmp)
            fsync_tree(tmp)
            final = self.path / name
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            state = {"dir": name, "generation": gen, "spec": index.spec}
            atomic_write_bytes(self.path / "index.json", json.dumps(state).encode())
            for old in self.path.glob("index-*"):
                if old.name != name:
                    shutil.rmtree(old, ignore_errors=True)
            for old in self.path.glob(".index-*.tmp"):
                shutil.rmtree(old, ignore_errors=True)

    def persist(self) -> None:
        """Save the derived caches (vectors and index) so the next open is fast."""
        self.save_cache()
        self._resolve_auto()
        self.save_index()

    # ----------------------------------------------------------------- summary
    def info(self) -> dict[str, Any]:
        size = sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())
        catalogues = [
            {"catalogue": r[0], "items": r[1]}
            for r in self._read("SELECT catalogue, COUNT(*) FROM items GROUP BY catalogue")
        ]
        return {
            "path": str(self.path),
            "items": len(self),
            "encoder": self.encoder_name,
            "encoder_version": self.encoder_version,
            "encoder_source": self.encoder_source,
            "dim": self.dim,
            "colour_dim": self.colour_dim,
            "index": self.active_index_spec,
            "index_choice": describe_choice(self.dim) if is_auto(self.index_spec) else "explicit",
            "generation": self.generation,
            "catalogues": catalogues,
            "disk_bytes": size,
            "metadata_columns": sorted(self.metadata_columns(max_values=1)),
        }
