"""Extra vectors per item, kept beside a collection's own: the machinery shared by the attribute
vectors (:mod:`vestis.store.attribute_index`) and the joint text-image vectors
(:mod:`vestis.store.joint_index`).

A store of kind K holds, for every item, one L2-normalised vector per *slot* (an attribute, or the
single joint space), produced by one model. It lives in the collection's SQLite database::

    <table>(vid, <slot column>, vector BLOB, <generation column>)   one row per (item, slot)
    settings: K_model, K_model_version, K_names, K_dim, K_generation
    <model dir>/                                                  the collection's copy of the model

and follows the collection's rules: SQLite is the source of truth, the in-memory table and
``cache/<cache file>`` are derived. Every write of vectors is one transaction that bumps the
store's generation; a trigger deletes an item's rows in the transaction that deletes the item
(removal, or replacement by ``vestis index``), so no vector outlives its item. An in-memory table
loaded at (collection generation G, store generation H) catches up like the collection's index:
it drops the vids the collection removed after G and adds the rows written after H. Items added
later have no vectors until the store's build embeds the items that lack them (:meth:`missing`).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, Self

import numpy as np

from vestis.errors import EncoderMismatchError, VestisError
from vestis.store.atomic import atomic_write
from vestis.store.collection import DB_NAME, Collection, VectorTable


class ItemVectors:
    """One kind of per-item vectors of a collection (see the module docstring). Thread-safe.

    Subclasses name their kind: ``KIND`` (the settings prefix), ``TABLE``, ``SLOT`` and
    ``GENERATION`` (its column names), ``CACHE`` (the file under ``cache/``) and ``REBUILD_HINT``
    (the command that re-embeds every item)."""

    KIND: ClassVar[str]
    TABLE: ClassVar[str]
    SLOT: ClassVar[str]
    GENERATION: ClassVar[str]
    CACHE: ClassVar[str]
    REBUILD_HINT: ClassVar[str]

    def __init__(self, collection: Collection) -> None:
        self.collection = collection
        self._conn = sqlite3.connect(
            collection.path / DB_NAME, check_same_thread=False, isolation_level=None, timeout=30
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._lock = threading.RLock()
        self._table: VectorTable | None = None
        self._synced = (0, 0)  # (collection generation, store generation) the table reflects
        self._load_settings()

    @classmethod
    def _schema(cls) -> str:
        return f"""
CREATE TABLE IF NOT EXISTS {cls.TABLE}(
    vid INTEGER NOT NULL,
    {cls.SLOT} TEXT NOT NULL,
    vector BLOB NOT NULL,
    {cls.GENERATION} INTEGER NOT NULL,
    PRIMARY KEY (vid, {cls.SLOT})
);
CREATE INDEX IF NOT EXISTS {cls.TABLE}_{cls.GENERATION} ON {cls.TABLE}({cls.GENERATION});
CREATE TRIGGER IF NOT EXISTS {cls.TABLE}_forget AFTER DELETE ON items
BEGIN DELETE FROM {cls.TABLE} WHERE vid = OLD.vid; END;
"""

    # ----------------------------------------------------------------- opening
    @classmethod
    def open(cls, collection: Collection) -> Self | None:
        """The collection's store of this kind, or None when it has no model for it."""
        store = cls(collection)
        if store.model_version:
            return store
        store.close()
        return None

    @classmethod
    def _configure(cls, collection: Collection, *, version: str, names: list[str], dim: int,
                   install: Callable[[], str], model_name: str, rebuild: bool) -> Self:
        """The store for a model of ``version`` (slots ``names``, vectors of ``dim``), created
        when the collection has none; ``install()`` copies the model into the collection and
        returns its path there. Another model's vectors are refused unless ``rebuild`` (they are
        then dropped)."""
        store = cls(collection)
        try:
            if store.model_version and store.model_version != version and not rebuild:
                raise EncoderMismatchError(
                    f"the {cls.KIND} vectors of {collection.path} were embedded with {store.model_version}; "
                    f"{model_name} is {version}. Rebuild them with --rebuild"
                )
            with store._lock:
                store._conn.executescript(cls._schema())  # idempotent; executescript commits on its own
            with store._lock, store._conn:
                store._conn.execute("BEGIN IMMEDIATE")
                if store.model_version != version:
                    installed = install()
                    store._conn.execute(f"DELETE FROM {cls.TABLE}")
                    store._write_settings({
                        f"{cls.KIND}_model": installed,
                        f"{cls.KIND}_model_version": version,
                        f"{cls.KIND}_names": json.dumps(names),
                        f"{cls.KIND}_dim": str(dim),
                        f"{cls.KIND}_generation": str(store.generation() + 1),
                    })
                    (collection.path / "cache" / cls.CACHE).unlink(missing_ok=True)
            store._load_settings()
            store._table = None
        except BaseException:
            store.close()
            raise
        return store

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _load_settings(self) -> None:
        with self._lock:
            rows = self._conn.execute("SELECT key, value FROM settings WHERE key LIKE ?",
                                      (f"{self.KIND}%",)).fetchall()
        settings = dict(rows)
        self.model_path = settings.get(f"{self.KIND}_model", "")
        self.model_version = settings.get(f"{self.KIND}_model_version", "")
        self.names: list[str] = json.loads(settings.get(f"{self.KIND}_names", "[]"))
        self.dim = int(settings.get(f"{self.KIND}_dim", "0"))

    def _write_settings(self, values: dict[str, str]) -> None:
        self._conn.executemany("INSERT OR REPLACE INTO settings VALUES (?, ?)", values.items())

    def generation(self) -> int:
        """The store's generation: bumped by every write of vectors."""
        with self._lock:
            row = self._conn.execute("SELECT value FROM settings WHERE key=?",
                                     (f"{self.KIND}_generation",)).fetchone()
        return int(row[0]) if row else 0

    def check_version(self, version: str) -> None:
        """Refuse query vectors from another model than the one that embedded the items."""
        if version != self.model_version:
            raise EncoderMismatchError(
                f"the {self.KIND} vectors of {self.collection.path} were embedded with {self.model_version}, "
                f"not {version}; search with that model or rebuild: {self.REBUILD_HINT}"
            )

    # ----------------------------------------------------------------- writing
    def missing(self) -> list[tuple[int, str, str, str]]:
        """(vid, id, source, content hash) of the items that have no vectors of this kind yet."""
        with self._lock:
            return self._conn.execute(
                f"SELECT vid, id, source, hash FROM items WHERE vid NOT IN (SELECT vid FROM {self.TABLE}) "
                "ORDER BY vid"
            ).fetchall()

    def add(self, vids: np.ndarray, vectors: np.ndarray) -> int:
        """Store the vectors (len(vids) x slots x dim) of items in one transaction; items that
        left the collection meanwhile are skipped. Returns how many items were written."""
        vectors = np.asarray(vectors, np.float32)
        if vectors.shape[1:] != (len(self.names), self.dim) or len(vectors) != len(vids):
            raise VestisError(f"{self.KIND} vectors must be {len(vids)} x {len(self.names)} x {self.dim}, "
                              f"got {vectors.shape}")
        with self._lock, self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            gen = self.generation() + 1
            self._write_settings({f"{self.KIND}_generation": str(gen)})
            written = 0
            for vid, per_slot in zip(np.asarray(vids).tolist(), vectors):
                if self._conn.execute("SELECT 1 FROM items WHERE vid=?", (vid,)).fetchone() is None:
                    continue
                self._conn.executemany(
                    f"INSERT OR REPLACE INTO {self.TABLE} VALUES (?, ?, ?, ?)",
                    [(vid, s, np.ascontiguousarray(v).tobytes(), gen) for s, v in zip(self.names, per_slot)],
                )
                written += 1
        return written

    # ----------------------------------------------------------------- reading
    @property
    def lock(self) -> threading.RLock:
        return self._lock

    def table(self) -> VectorTable:
        """Every item's vectors side by side (slots x dim per row), brought up to date with the
        committed writes of any process."""
        with self._lock:
            if self._table is None:
                self._table, self._synced = self._load()
            self._catch_up()
            return self._table

    def _snapshot(self) -> tuple[int, int]:
        cgen = self._conn.execute("SELECT value FROM settings WHERE key='generation'").fetchone()
        sgen = self._conn.execute("SELECT value FROM settings WHERE key=?", (f"{self.KIND}_generation",)).fetchone()
        return int(cgen[0]), int(sgen[0]) if sgen else 0

    def _rows(self, where: str, params: tuple) -> tuple[np.ndarray, np.ndarray]:
        """vids and their stacked vectors (slots in model order) of rows matching ``where``."""
        position = {a: i for i, a in enumerate(self.names)}
        found: dict[int, np.ndarray] = {}
        query = f"SELECT vid, {self.SLOT}, vector FROM {self.TABLE} WHERE {where}"
        for vid, slot, blob in self._conn.execute(query, params):
            if slot in position:
                row = found.setdefault(vid, np.zeros((len(self.names), self.dim), np.float32))
                row[position[slot]] = np.frombuffer(blob, np.float32)
        vids = np.array(sorted(found), np.int64)
        vectors = (np.stack([found[v].reshape(-1) for v in vids.tolist()]) if len(vids)
                   else np.zeros((0, len(self.names) * self.dim), np.float32))
        return vids, vectors

    def _load(self) -> tuple[VectorTable, tuple[int, int]]:
        table = VectorTable(len(self.names) * self.dim, 0)
        cache = self.collection.path / "cache" / self.CACHE
        if cache.exists():
            try:
                with np.load(cache) as z:
                    if str(z["model_version"]) == self.model_version:
                        table.add(z["vids"], z["vectors"], None)
                        return table, (int(z["generation"]), int(z["store_generation"]))
            except (OSError, ValueError, KeyError):
                table = VectorTable(len(self.names) * self.dim, 0)  # torn or foreign: rebuilt below
        with self._conn:
            self._conn.execute("BEGIN")  # one snapshot: the generations match the rows read
            synced = self._snapshot()
            vids, vectors = self._rows("1", ())
        table.add(vids, vectors, None)
        return table, synced

    def _catch_up(self) -> None:
        table = self._table
        assert table is not None
        with self._conn:
            self._conn.execute("BEGIN")
            now = self._snapshot()
            if now == self._synced:
                return
            cgen, sgen = self._synced
            vids, vectors = self._rows(f"{self.GENERATION} > ?", (sgen,))
            removed = [r[0] for r in self._conn.execute("SELECT vid FROM removed WHERE gen > ?", (cgen,))]
        table.remove(vids.tolist())
        table.add(vids, vectors, None)
        table.remove(removed)
        self._synced = now

    def save(self) -> None:
        """Write ``cache/<cache file>`` (atomic) so the next open skips reading SQLite."""
        with self._lock:
            table = self.table()
            vids, vectors, _ = table.view
            cgen, sgen = self._synced
            (self.collection.path / "cache").mkdir(exist_ok=True)

            def write(path: Path) -> None:
                with open(path, "wb") as f:
                    np.savez(f, vids=vids, vectors=vectors, generation=cgen, store_generation=sgen,
                             model_version=np.array(self.model_version))

            atomic_write(self.collection.path / "cache" / self.CACHE, write)

    def stored_vectors(self, vid: int) -> np.ndarray | None:
        """The stored vectors (slots x dim) of one item; None when it has none yet."""
        table = self.table()
        row = table.row_of.get(int(vid))
        return None if row is None else table.vectors[row].reshape(len(self.names), self.dim).copy()

    def embedded(self) -> int:
        """How many items have vectors of this kind."""
        with self._lock:
            return self._conn.execute(f"SELECT COUNT(DISTINCT vid) FROM {self.TABLE}").fetchone()[0]
